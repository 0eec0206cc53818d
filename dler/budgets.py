"""Difficulty-aware length budgets (DA-DLER): a prompt's budget depends on how often its group was right.

The paper's rule: accuracy >= 0.5 -> 2000 tokens, else the default 4000. Bands are written `"MIN_ACCURACY:BUDGET"`
(YAML or CLI friendly); the band with the highest threshold that the accuracy reaches wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def parse_length_budgets(entries: Iterable[str | Sequence] | None) -> list[tuple[float, int]]:
    """Parse `["0.5:2000", ...]` (or `[(0.5, 2000), ...]`) into bands sorted by threshold, highest first."""
    bands: list[tuple[float, int]] = []
    for entry in entries or []:
        try:
            if isinstance(entry, str):
                accuracy_text, budget_text = entry.split(":")
                accuracy, budget = float(accuracy_text), int(budget_text)
            else:
                accuracy, budget = float(entry[0]), int(entry[1])
        except (ValueError, TypeError, IndexError):
            raise ValueError(
                f"length_budgets entry {entry!r} is not 'MIN_ACCURACY:BUDGET' (e.g. '0.5:2000')"
            ) from None
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"length_budgets entry {entry!r}: accuracy threshold must be in [0, 1]")
        if budget <= 0:
            raise ValueError(f"length_budgets entry {entry!r}: budget must be a positive number of tokens")
        bands.append((accuracy, budget))
    thresholds = [accuracy for accuracy, _ in bands]
    if len(set(thresholds)) != len(thresholds):
        raise ValueError(f"length_budgets has the same accuracy threshold twice: {sorted(thresholds)}")
    return sorted(bands, reverse=True)


def budget_for_accuracy(accuracy: float, bands: Sequence[tuple[float, int]], default: int) -> int:
    """The budget of the highest band whose threshold `accuracy` reaches; `default` when it reaches none."""
    for threshold, budget in bands:  # sorted highest threshold first
        if accuracy >= threshold:
            return budget
    return default


def group_accuracy(correctness: torch.Tensor) -> float:
    """The fraction of a group's scorable rollouts with positive correctness (NaN, every correctness function None,
    is left out); 0.0 when none is scorable."""
    correctness = torch.as_tensor(correctness, dtype=torch.float32)
    scorable = correctness[~torch.isnan(correctness)]
    return (scorable > 0).float().mean().item() if scorable.numel() else 0.0
