"""DLER's truncation penalty (arXiv 2510.15110): an over-budget response earns nothing."""

from __future__ import annotations

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.registry import register_penalty


@register_penalty("truncation")
class TruncationPenalty(LengthPenalty):
    """`reward = c` if the response finished within its budget, else `c * truncated_reward_scale`.

    The budget is `group.budget` (the trainer's `truncation_length`, or the DA-DLER band's budget); a response cut off
    by the generation cap (no EOS) is over budget. `truncated_reward_scale=0` is the paper; the released launch
    script uses 0.1 (verl's `stop_properly_penalty.penalty_coef`).
    """

    name = "truncation"
    formula = "c if L <= budget and EOS, else c * truncated_reward_scale; budget = group budget"
    reference = "DLER (NVIDIA, 2025), arXiv 2510.15110"

    def __init__(self, truncated_reward_scale: float = 0.0):
        if isinstance(truncated_reward_scale, bool) or not isinstance(truncated_reward_scale, (int, float)):
            raise ValueError(f"truncated_reward_scale must be a number, got {truncated_reward_scale!r}")
        if not 0.0 <= truncated_reward_scale <= 1.0:
            raise ValueError(f"truncated_reward_scale must be in [0, 1], got {truncated_reward_scale}")
        self.truncated_reward_scale = float(truncated_reward_scale)

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        correctness = group.correctness.to(torch.float32)
        scale = torch.where(group.over_budget, self.truncated_reward_scale, 1.0)
        return correctness * scale
