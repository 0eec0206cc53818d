"""Arora & Zanette 2025, "Training Language Models to Reason Efficiently" (arXiv 2502.04463, Eq. 4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.params import param
from dler.penalties.registry import register_penalty


@register_penalty("efficient")
@dataclass(eq=False)
class EfficientPenalty(LengthPenalty):
    """`c * (1 - alpha * sigmoid((L - mean) / (std + eps)))` over the group's correct responses; 0 without EOS.

    Mean and std are over the group's correct (c > 0) responses that ended with EOS; std is the population std
    (numpy's `np.std`, as in their released `reward_server/math_server.py`, `query`, with `--check_eos`), so one
    correct response gets `c * (1 - alpha/2)`. A response without EOS earns 0. No correct response: every reward is
    `c` (0 for the math grader; the released server gives 0 to every response that is not correct). Their server
    counts lengths without special tokens, dler with EOS: the shift cancels in `L - mean`.
    """

    formula = "c * (1 - alpha * sigmoid((L - mean_c)/(std_c + eps))), mean/std over correct EOS responses; 0 if no EOS"
    reference = "Arora & Zanette 2025, arXiv 2502.04463"

    alpha: float = param(0.1, ge=0.0, lt=1.0, help="strength of the length penalty")
    eps: float = param(1e-7, gt=0.0)

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        correctness = group.correctness.to(torch.float64)
        lengths = group.lengths.to(torch.float64)
        counted = (correctness > 0) & group.finished
        if not counted.any():
            return torch.where(group.finished, correctness, 0.0).to(torch.float32)
        mean = lengths[counted].mean()
        std = lengths[counted].std(correction=0)
        shaped = correctness * (1.0 - self.alpha * torch.sigmoid((lengths - mean) / (std + self.eps)))
        return torch.where(group.finished, shaped, 0.0).to(torch.float32)
