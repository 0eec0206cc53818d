"""The penalty plugin interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from dler.penalties.params import check_fields


@dataclass
class RolloutGroup:
    """One prompt's rollouts, as a penalty sees them.

    correctness: the correctness functions' weighted score per rollout (`correctness_rewards`; 1.0 / 0.0 for the
    math grader; 0 for a rollout none of them scored, whose output the trainer discards).
    lengths: response length in tokens, EOS included. finished: the response ended with EOS (not cut by the cap).
    budget: this prompt's length budget in tokens. step: the trainer's global optimizer step.
    prompt: the dataset row of the prompt (every column), for penalties that read e.g. a target length.
    completions: the response texts, for penalties that check format or repetition.
    max_length: the generation cap (`max_completion_length`), for penalties defined relative to it.
    """

    correctness: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    budget: int
    step: int = 0
    prompt: dict[str, Any] = field(default_factory=dict)
    completions: list[str] = field(default_factory=list)
    max_length: int | None = None

    @property
    def over_budget(self) -> torch.Tensor:
        """Longer than the budget, or cut off by the generation cap."""
        return (self.lengths > self.budget) | ~self.finished


def generation_cap(who: str, max_length: int | None, group: RolloutGroup) -> int:
    """Lmax of penalties defined relative to it: their own `max_length` if set, else the group's generation cap."""
    lmax = max_length if max_length is not None else group.max_length
    if lmax is None:
        raise ValueError(f"{who} needs Lmax: set max_length or give the group a generation cap (max_length)")
    return lmax


@dataclass(eq=False)
class LengthPenalty(ABC):
    """Base class: a dataclass whose fields are its parameters (made with `param()`); subclasses implement `__call__`.

    The fields are checked and coerced once, when the penalty is built, then `check()` runs the cross-field checks.
    `register_penalty` sets `name`; `formula` and `reference` feed the docs table. Penalties with state (a schedule,
    adaptive targets) override `state_dict` / `load_state_dict`; the trainer stores that state (JSON-serialisable)
    in every checkpoint and restores it on resume.
    """

    name: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    reference: ClassVar[str] = ""

    def __post_init__(self):
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Checks across parameters, after each was checked on its own: raise ValueError naming them."""
        return None

    @abstractmethod
    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        """One shaped reward per rollout of `group`."""

    def effective_budget(self, group: RolloutGroup) -> int:
        """The length limit this penalty applied to `group` (logged as the budget; over it counts as over budget).

        Penalties with their own targets (ThinkPrune's stages, Laser's targets) override this.
        """
        return group.budget

    def check_cap(self, max_length: int | None) -> None:
        """Fail early, when the config is built, if this penalty cannot work with the generation cap."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load, got keys {sorted(state)}")
