"""DLER's truncation penalty (arXiv 2510.15110): an over-budget response earns nothing."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.params import param
from dler.penalties.registry import register_penalty


@register_penalty("truncation")
@dataclass(eq=False)
class TruncationPenalty(LengthPenalty):
    """`reward = c` if the response finished within its budget, else `c * truncated_reward_scale`.

    The budget is `group.budget` (the trainer's `truncation_length`, or the DA-DLER band's budget); a response cut off
    by the generation cap (no EOS) is over budget. `truncated_reward_scale=0` is the paper; the released launch
    script uses 0.1 (verl's `stop_properly_penalty.penalty_coef`).
    """

    formula = "c if L <= budget and EOS, else c * truncated_reward_scale; budget = group budget"
    reference = "DLER (NVIDIA, 2025), arXiv 2510.15110"

    truncated_reward_scale: float = param(0.0, ge=0.0, le=1.0, help="share of c an over-budget response keeps")

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        correctness = group.correctness.to(torch.float32)
        scale = torch.where(group.over_budget, self.truncated_reward_scale, 1.0)
        return correctness * scale
