"""DLER's truncation penalty (arXiv 2510.15110): an over-budget response earns nothing."""

from __future__ import annotations

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup


class TruncationPenalty(LengthPenalty):
    """`reward = c` if the response finished within its budget, else `c * truncated_reward_scale`.

    `truncated_reward_scale=0` is the paper; the released launch script uses 0.1 (verl's
    `stop_properly_penalty.penalty_coef`).
    """

    name = "truncation"

    def __init__(self, truncated_reward_scale: float = 0.0):
        if not 0.0 <= truncated_reward_scale <= 1.0:
            raise ValueError(f"truncated_reward_scale must be in [0, 1], got {truncated_reward_scale}")
        self.truncated_reward_scale = truncated_reward_scale

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        correctness = group.correctness.to(torch.float32)
        scale = torch.where(group.over_budget, self.truncated_reward_scale, 1.0)
        return correctness * scale
