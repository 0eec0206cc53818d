"""Cosine length-scaling reward (Yeo et al. 2025, "Demystifying Long Chain-of-Thought Reasoning in LLMs",
arXiv 2502.03373, Sec. 4 / released code eddycmu/demystify-long-cot, `openrlhf/openrlhf/reward/cosine.py`:
`CosineScaledSparseReward.reward`, with `MAX_LEN_MARGIN` from `openrlhf/openrlhf/reward/common.py`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup, generation_cap
from dler.penalties.params import param
from dler.penalties.registry import register_penalty


@register_penalty("cosine")
@dataclass(eq=False)
class CosinePenalty(LengthPenalty):
    """`lo + (hi - lo) * (1 + cos(pi L / Lmax)) / 2`, and `exceed_reward` once `L + exceed_margin >= Lmax` or
    without EOS.

    Correct answers (c > 0) use `(lo, hi) = (min_correct, max_correct)`: shorter earns more. Wrong ones use
    `(lo, hi) = (max_wrong, min_wrong)`: shorter is punished more. `Lmax` is `max_length` or, by default, the
    generation cap `group.max_length`, as in the paper. Defaults are the paper's script (section 4.2, cosine). The
    released code counts a response as exceeding from `MAX_LEN_MARGIN = 16` tokens before `Lmax` (a guard
    against off-by-one lengths); `exceed_margin` defaults to that 16, and `exceed_margin=0` is the paper's
    `L >= Lmax`. Not included: the released code's optional n-gram repetition penalty (off in that script).
    """

    formula = (
        "L + exceed_margin >= Lmax or no EOS: exceed_reward; else lo + (hi-lo)(1+cos(pi L/Lmax))/2, (lo,hi) = "
        "(min_correct,max_correct) if correct else (max_wrong,min_wrong); Lmax = generation cap"
    )
    reference = "Yeo et al. 2025, arXiv 2502.03373"

    max_length: int | None = param(None, kind=int, ge=1, help="Lmax; None = the generation cap")
    min_correct: float = param(1.0)
    max_correct: float = param(2.0)
    min_wrong: float = param(-10.0)
    max_wrong: float = param(0.0)
    exceed_reward: float = param(-10.0)
    exceed_margin: int = param(16, ge=0, help="tokens before Lmax from which a response exceeds (released: 16)")

    def check(self) -> None:
        if self.min_correct > self.max_correct or self.min_wrong > self.max_wrong:
            raise ValueError(
                f"cosine: need min_correct <= max_correct and min_wrong <= max_wrong, got {self.min_correct}, "
                f"{self.max_correct}, {self.min_wrong}, {self.max_wrong}"
            )

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        lmax = generation_cap("cosine", self.max_length, group)
        lengths = group.lengths.to(torch.float64)
        correct = group.correctness > 0
        f64 = torch.float64
        lo = torch.where(correct, torch.tensor(self.min_correct, dtype=f64), torch.tensor(self.max_wrong, dtype=f64))
        hi = torch.where(correct, torch.tensor(self.max_correct, dtype=f64), torch.tensor(self.min_wrong, dtype=f64))
        rewards = lo + (hi - lo) * (1.0 + torch.cos(math.pi * lengths / lmax)) / 2.0
        exceeded = (lengths + self.exceed_margin >= lmax) | ~group.finished
        return torch.where(exceeded, self.exceed_reward, rewards).to(torch.float32)
