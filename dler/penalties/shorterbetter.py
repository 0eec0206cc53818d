"""ShorterBetter (Yi et al. 2025, arXiv 2504.21370): pull every rollout towards the group's shortest correct one."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.params import param
from dler.penalties.registry import register_penalty


@register_penalty("shorterbetter")
@dataclass(eq=False)
class ShorterBetterPenalty(LengthPenalty):
    """`alpha * c - beta * |L - L_sol|`, `L_sol` = the shortest correct length in the group (mean length if none).

    As their released reward manager (JingyangYi/ShorterBetter, `verl/verl/workers/reward_manager/naive.py`:
    `check_correctness_and_length`, `sb_compute_score`, alpha 2.0 and beta 0.001): correct means c > 0, and a
    response cut by the cap is judged by its (capped) length like any other. The released reward is `alpha` for a
    correct answer; dler's `alpha * c` is the same for the 1/0 grader.
    """

    formula = "alpha*c - beta*abs(L - L_sol), L_sol = shortest correct L in the group (group mean L if none correct)"
    reference = "ShorterBetter, Yi et al. 2025, arXiv 2504.21370"

    alpha: float = param(2.0, ge=0.0, help="weight of correctness")
    beta: float = param(0.001, ge=0.0, help="penalty per token away from L_sol")

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        correctness = group.correctness.to(torch.float64)
        lengths = group.lengths.to(torch.float64)
        correct = correctness > 0
        optimal = lengths[correct].min() if correct.any() else lengths.mean()
        return (self.alpha * correctness - self.beta * (lengths - optimal).abs()).to(torch.float32)
