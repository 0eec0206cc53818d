"""ThinkPrune (Hou et al. 2025, arXiv 2504.01296): truncation with a budget lowered in stages (4k -> 3k -> 2k).

Released code: UCSB-NLP-Chang/ThinkPrune, `local_scripts/multi_node_run_*.sh` (the budget is the generation cap,
`data.max_response_length`, one run per stage) and `verl/trainer/main_ppo.py` (`RewardManager`: the correctness of
the decoded response, however it ended).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.params import param
from dler.penalties.registry import register_penalty


@register_penalty("thinkprune")
@dataclass(eq=False)
class ThinkPrunePenalty(LengthPenalty):
    """Truncation (`c` within the budget, else 0) whose budget follows a stage schedule.

    ThinkPrune enforces the budget as the generation cap and grades whatever text the cap left, so "within" is
    `L <= budget` alone: a response the cap cut at the budget keeps the correctness the grader gave its cut text
    (usually 0: no answer yet). With `max_completion_length` above the budget, a longer response earns 0, where
    ThinkPrune would have graded its first `budget` tokens; set the cap to the stage's budget to match it exactly.
    Stage k (budget `budgets[k]`) starts at optimizer step `stage_steps[k-1]`; its budget replaces `group.budget`.
    The paper runs each stage as its own training round until the reward settles; the default switch steps
    (100, 200) are dler's and should be set to your run. The stage is derived from `group.step` and never goes
    back; it is saved in the checkpoint state and restored with it.
    """

    formula = "c if L <= budgets[stage], else 0; stage k from step stage_steps[k-1]"
    reference = "ThinkPrune, Hou et al. 2025, arXiv 2504.01296"

    budgets: tuple[int, ...] = param((4000, 3000, 2000), ge=1, help="budget of each stage, in tokens")
    stage_steps: tuple[int, ...] = param(
        (100, 200), ge=0, min_items=0, help="optimizer step at which each later stage starts"
    )
    stage: int = field(default=0, init=False)  # state: the current stage, saved in checkpoints

    def check(self) -> None:
        if len(self.stage_steps) != len(self.budgets) - 1:
            raise ValueError(
                f"thinkprune: stage_steps needs one step per stage after the first ({len(self.budgets) - 1} for "
                f"budgets {list(self.budgets)}), got {list(self.stage_steps)}"
            )
        if any(b <= a for a, b in zip(self.stage_steps, self.stage_steps[1:], strict=False)):
            raise ValueError(f"thinkprune: stage_steps must increase, got {list(self.stage_steps)}")

    @property
    def budget(self) -> int:
        return self.budgets[self.stage]

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        self.stage = max(self.stage, bisect.bisect_right(self.stage_steps, group.step))
        within = group.lengths <= self.budget
        return torch.where(within, group.correctness.to(torch.float32), 0.0)

    def effective_budget(self, group: RolloutGroup) -> int:
        return self.budget

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "budget": self.budget}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        stage = state.get("stage")
        if not isinstance(stage, int) or not 0 <= stage < len(self.budgets):
            raise ValueError(f"thinkprune: saved stage {stage!r} does not fit budgets {list(self.budgets)}")
        self.stage = stage
