"""An example third-party length penalty: half the reward for a response over its budget."""

from dataclasses import dataclass

import torch

from dler.penalties import LengthPenalty, RolloutGroup, param


@dataclass(eq=False)
class HalfPenalty(LengthPenalty):
    """`c` within the budget, `c * scale` over it (registered as `example_half` by the entry point)."""

    formula = "c if within budget, else c * scale"
    reference = "dler example plugin"

    scale: float = param(0.5, ge=0.0, le=1.0)

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        return group.correctness.float() * torch.where(group.over_budget, self.scale, 1.0)
