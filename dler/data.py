"""Training data for R1-style math RL: DeepScaleR-like rows become chat prompts with their gold answers.

The paper's prompt is the problem, a space, and `Let's think step by step and output the final answer within
\\boxed{}.` as the user message; the model's chat template is applied by TRL. Rows come from a hub id or a local
JSON/JSONL/Parquet file with the same fields, and every gold answer is parsed once, here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset, load_dataset

from dler.eval.benchmarks import R1_PROMPT_TEMPLATE  # one prompt for training and evaluation

logger = logging.getLogger(__name__)
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def r1_prompt(problem: str) -> list[dict[str, str]]:
    """The conversational prompt of the DLER paper (and DeepScaleR) for one problem."""
    return [{"role": "user", "content": R1_PROMPT_TEMPLATE.replace("{problem}", problem)}]


def load_rows(source: str, split: str = "train", revision: str | None = None) -> Dataset:
    """A dataset from a local file (by extension) or a hub id."""
    path = Path(source)
    if path.suffix in LOCAL_FORMATS:
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {source} does not exist")
        return load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
    return load_dataset(source, split=split, revision=revision)


def drop_duplicates(dataset: Dataset, column: str, on_duplicate: str = "skip") -> Dataset:
    """Keep the first row of each distinct `column` value; report the others (count and examples), or raise."""
    if on_duplicate not in ("skip", "error"):
        raise ValueError(f"on_duplicate must be 'skip' or 'error', got {on_duplicate!r}")
    seen: dict = {}
    duplicates = []
    for i, value in enumerate(dataset[column]):
        key = value.strip() if isinstance(value, str) else value
        if key in seen:
            duplicates.append((i, seen[key]))
        else:
            seen[key] = i
    if not duplicates:
        return dataset
    examples = ", ".join(f"row {i} repeats row {first}" for i, first in duplicates[:5])
    what = f"{len(duplicates)} of {len(dataset)} rows repeat an earlier {column!r} ({examples})"
    if on_duplicate == "error":
        raise ValueError(f"{what}. Deduplicate the data, or set duplicate_problems='skip' to drop the repeats.")
    logger.warning("%s: skipping them.", what)
    return dataset.select(sorted(seen.values()))


def math_prompts(
    dataset: Dataset,
    problem_column: str = "problem",
    answer_column: str = "answer",
    on_invalid: str = "skip",
    reward=None,
    on_duplicate: str = "skip",
) -> Dataset:
    """Add the R1 `prompt` column, check the columns, drop repeated problems, and parse every gold answer once.

    Rows whose gold cannot be parsed, and repeats of a problem, are reported (count and examples) and skipped, or
    raise with `on_invalid="error"` / `on_duplicate="error"`.
    """
    missing = [c for c in (problem_column, answer_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"dataset has no column {missing} (columns: {dataset.column_names}); set problem_column / answer_column"
        )
    from dler.rewards import prepare_gold_answers

    dataset = drop_duplicates(dataset, problem_column, on_duplicate)
    dataset, _ = prepare_gold_answers(dataset, answer_column=answer_column, on_invalid=on_invalid, reward=reward)
    return dataset.map(lambda row: {"prompt": r1_prompt(row[problem_column])})
