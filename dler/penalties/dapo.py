"""DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, Eq. 13) on DAPO's +1 / -1 correctness reward.

Released code: volcengine/verl, `verl/workers/reward_manager/dapo.py` (`DAPORewardManager`, the overlong buffer) and
`verl/utils/reward_score/math_dapo.py` (`compute_score`: 1.0 if correct, else -1.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup, generation_cap
from dler.penalties.params import param
from dler.penalties.registry import register_penalty


@register_penalty("soft_overlong")
@dataclass(eq=False)
class SoftOverlongPenalty(LengthPenalty):
    """`R + p`: DAPO's correctness reward R plus no punishment up to `Lmax - B`, then linear down to -1 at `Lmax`, and
    -1 beyond.

    R maps the correctness c linearly from [0, 1] onto [`wrong_reward`, `correct_reward`]: +1 / -1 for the 1/0
    math grader, DAPO's rule-based reward (`math_dapo.compute_score`); `wrong_reward=0` gives `c + p`.
    `Lmax` is `max_length` or, by default, the generation cap `group.max_length` (DAPO: 20480 with B = 4096). A
    response without EOS was cut by the cap, so it counts as beyond `Lmax` (-1). `penalty_factor` scales p as in
    verl's `overlong_buffer.penalty_factor` (1.0 = the paper). B must not exceed `Lmax` (checked per call, since
    `Lmax` may come from the group).
    """

    formula = (
        "R + p; R = wrong_reward + (correct_reward - wrong_reward) * c (+1/-1); p = 0 if L <= Lmax-B, (Lmax-B-L)/B "
        "if L <= Lmax, -1 beyond or no EOS; Lmax = generation cap"
    )
    reference = "DAPO, Yu et al. 2025, arXiv 2503.14476"

    buffer: int = param(4096, ge=1, help="B, the overlong buffer in tokens")
    max_length: int | None = param(None, kind=int, ge=1, help="Lmax; None = the generation cap")
    penalty_factor: float = param(1.0, ge=0.0, help="scale of p")
    correct_reward: float = param(1.0, help="R of a correct answer (c = 1)")
    wrong_reward: float = param(-1.0, help="R of a wrong answer (c = 0); DAPO's -1")

    def check_cap(self, max_length: int | None) -> None:
        lmax = self.max_length if self.max_length is not None else max_length
        if lmax is not None and self.buffer > lmax:
            raise ValueError(
                f"soft_overlong: buffer B={self.buffer} exceeds Lmax={lmax} (max_completion_length unless "
                f'penalty_kwargs sets max_length); set penalty_kwargs {{"buffer": {lmax // 4}}} or another B <= {lmax}'
            )

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        lmax = generation_cap("soft_overlong", self.max_length, group)
        if self.buffer > lmax:
            raise ValueError(f"soft_overlong: buffer B={self.buffer} exceeds Lmax={lmax}; choose buffer <= {lmax}")
        lengths = group.lengths.to(torch.float32)
        p = ((lmax - self.buffer - lengths) / self.buffer).clamp(-1.0, 0.0)
        p = torch.where(group.finished, p, torch.tensor(-1.0))
        scale = self.correct_reward - self.wrong_reward
        rule_reward = self.wrong_reward + scale * group.correctness.to(torch.float32)
        return rule_reward + self.penalty_factor * p
