"""Reward functions that fail loudly: an exception or a non-finite reward names the function and the sample.

A reward function that raises inside TRL surfaces as a bare traceback from somewhere in a batch of thousands, and a
NaN or infinite reward flows silently into the advantages. `GuardedReward` wraps a plain reward function: on an
exception it re-runs the batch one sample at a time to find the row that fails, and it refuses rewards that are
NaN or infinite (None still means "does not apply", as in TRL).
"""

from __future__ import annotations

import math
from typing import Any

TRL_CONTROL_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments")


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned a reward that is not a finite number."""


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class GuardedReward:
    """Wraps a synchronous reward function; everything else (name, `close`, attributes) passes through."""

    def __init__(self, func, name: str):
        self.func, self.name = func, name
        self.__name__ = getattr(func, "__name__", name)

    def __getattr__(self, attribute):
        return getattr(self.func, attribute)

    def _one_sample(self, i: int, n: int, kwargs: dict) -> dict:
        return {
            k: ([v[i]] if isinstance(v, list) and len(v) == n and k not in TRL_CONTROL_KWARGS else v)
            for k, v in kwargs.items()
        }

    def _describe(self, i: int, kwargs: dict) -> str:
        return f"sample {i} (prompt: {_short(kwargs['prompts'][i])}; completion: {_short(kwargs['completions'][i])})"

    def __call__(self, **kwargs):
        n = len(kwargs["completions"])
        try:
            rewards = self.func(**kwargs)
        except Exception as error:
            for i in range(n):  # find the sample that fails, to name it
                try:
                    self.func(**self._one_sample(i, n, kwargs))
                except Exception:
                    raise RewardFunctionError(
                        f"reward function {self.name!r} raised {type(error).__name__}: {error} on "
                        f"{self._describe(i, kwargs)}"
                    ) from error
            raise RewardFunctionError(
                f"reward function {self.name!r} raised {type(error).__name__}: {error} on a batch of {n} "
                "completions (each sample alone passes)"
            ) from error
        for i, reward in enumerate(rewards):
            if reward is None:
                continue
            if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
                raise RewardFunctionError(
                    f"reward function {self.name!r} returned {reward!r} for {self._describe(i, kwargs)}: return a "
                    "finite number, or None where the function does not apply"
                )
        return rewards
