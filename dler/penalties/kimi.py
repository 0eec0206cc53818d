"""Kimi k1.5's length reward (Kimi Team 2025, arXiv 2501.12599, Sec. 2.3.3), as re-implemented by Laser."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.params import param
from dler.penalties.registry import register_penalty


@register_penalty("kimi")
@dataclass(eq=False)
class KimiPenalty(LengthPenalty):
    """`c + coef * (lam if correct else min(0, lam))`, `lam = 0.5 - (L - minL) / (maxL - minL)` over the group.

    The shortest rollout of a group gets +0.5, the longest -0.5; all lengths equal -> `lam = 0`. Wrong answers are
    only ever punished for length, never rewarded. The Kimi report (no released code) adds this length reward to
    its 1/0 correctness reward "with a weighting parameter" whose value it does not give; `coef=0.4` is `len_coef`
    in Laser's re-implementation (hkust-nlp/Laser, `length_penalty.py`: `compute_kimi_penalty`), the version Laser
    and DLER compare against. That re-implementation adds it to Laser's own base scores instead (+1 correct, -0.5
    wrong, -1 and no length term without a closed box or `</think>`: the `laser` penalty's); dler keeps the report's
    1/0 correctness. Lengths are taken as they are: a response cut by the cap simply is the longest.
    """

    formula = "c + coef * (lam if correct else min(0, lam)), lam = 0.5 - (L - minL)/(maxL - minL) over the group"
    reference = "Kimi k1.5, Kimi Team 2025, arXiv 2501.12599"

    coef: float = param(0.4, ge=0.0, help="weight of the length reward")

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        lengths = group.lengths.to(torch.float64)
        low, high = lengths.min(), lengths.max()
        lam = 0.5 - (lengths - low) / (high - low) if high > low else torch.zeros_like(lengths)
        correct = group.correctness > 0
        length_reward = torch.where(correct, lam, lam.clamp(max=0.0))
        return (group.correctness.to(torch.float64) + self.coef * length_reward).to(torch.float32)
