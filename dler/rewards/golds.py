"""A dataset's gold answers, checked once when it is loaded: `prepare_gold_answers` and its `GoldReport`.

A gold answer that cannot be parsed, or does not grade correct against itself, would score 0 for every rollout
of its prompt; this finds such rows (in the grading workers of a `MathReward`) and drops them or names them.
"""

import logging
from dataclasses import dataclass, field
from typing import Any

from dler.rewards.reward import MathReward, MissingAnswerColumn

logger = logging.getLogger(__name__)


@dataclass
class GoldReport:
    """What `prepare_gold_answers` found: how many golds cannot be parsed, with examples (row, value, why)."""

    column: str
    total: int
    invalid: int = 0
    examples: list[tuple[int, Any, str]] = field(default_factory=list)

    def __str__(self):
        shown = "; ".join(f"row {i}: {v!r} ({why})" for i, v, why in self.examples)
        return (
            f"{self.invalid} of {self.total} gold answers in column {self.column!r} cannot be parsed or do not "
            "grade correct against themselves" + (f", e.g. {shown}" if shown else "")
        )


def prepare_gold_answers(
    data,
    answer_column: str = "answer",
    on_invalid: str = "error",
    reward: MathReward | None = None,
    max_examples: int = 10,
):
    """Parse every gold answer once, when the dataset is loaded, and report the ones that cannot be graded.

    Args:
        data: a `datasets.Dataset`, a list of dict rows, or a plain list of gold answers.
        on_invalid: "error" raises a ValueError naming the column, rows and values; "skip" drops those rows and
            logs how many.
        reward: the `MathReward` that will grade (its workers do the parsing and keep the golds cached);
            a temporary one is used and closed otherwise.

    Returns:
        (data without the invalid rows, GoldReport).
    """
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    values = _gold_column(data, answer_column)
    owned = reward is None
    reward = reward or MathReward(answer_column=answer_column)
    try:
        verdicts = reward.check_answers(values)
    finally:
        if owned:
            reward.close()
    report = GoldReport(answer_column, len(values))
    keep = []
    for i, (value, (ok, why)) in enumerate(zip(values, verdicts, strict=True)):
        if not ok:
            report.invalid += 1
            if len(report.examples) < max_examples:
                report.examples.append((i, value, why))
        else:
            keep.append(i)
    if report.invalid and on_invalid == "error":
        raise ValueError(
            f"{report}. Fix these answers, or drop their rows: on_invalid='skip' (recipes: --invalid_answers skip)."
        )
    if report.invalid:
        logger.warning("%s: skipping these rows.", report)
        data = _select(data, keep)
    return data, report


def _gold_column(data, column: str) -> list:
    if hasattr(data, "column_names"):  # datasets.Dataset
        if column not in data.column_names:
            raise MissingAnswerColumn(f"the dataset has no column {column!r}; its columns are {data.column_names}")
        return list(data[column])
    rows = list(data)
    if rows and isinstance(rows[0], dict):
        for i, row in enumerate(rows):
            if column not in row:
                raise MissingAnswerColumn(f"row {i} has no column {column!r}; its keys are {sorted(row)}")
        return [row[column] for row in rows]
    return rows


def _select(data, keep: list[int]):
    if hasattr(data, "select"):
        return data.select(keep)
    rows = list(data)
    return [rows[i] for i in keep]
