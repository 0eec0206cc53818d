"""Reward functions that raise or return non-finite rewards fail naming the function and the sample."""

import math

import pytest

from dler.reward_guard import GuardedReward, RewardFunctionError

PROMPTS = ["p0", "p1", "p2"]
COMPLETIONS = ["c0", "c1", "bad"]


def call(func, **extra):
    return GuardedReward(func, "my_reward")(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=[[1], [2], [3]],
                                            answer=["1", "2", "3"], **extra)


def test_exception_names_the_function_and_the_failing_sample():
    def fragile(completions, answer, **kwargs):
        return [1.0 / (c != "bad") for c in completions]

    with pytest.raises(RewardFunctionError, match=r"'my_reward' raised ZeroDivisionError.*sample 2 \(prompt: p2; completion: bad\)"):
        call(fragile)


def test_non_finite_rewards_are_refused_and_none_is_allowed():
    assert call(lambda completions, **kw: [1.0, None, 0]) == [1.0, None, 0]
    for bad in (math.nan, math.inf, "1.0"):
        with pytest.raises(RewardFunctionError, match=r"'my_reward' returned .* for sample 1 \(prompt: p1"):
            call(lambda completions, bad=bad, **kw: [1.0, bad, 0.0])


def test_attributes_pass_through():
    class Reward:
        __name__ = "graded"
        closed = False

        def __call__(self, completions, **kwargs):
            return [0.0] * len(completions)

        def close(self):
            self.closed = True

    inner = Reward()
    guarded = GuardedReward(inner, "graded")
    guarded.close()
    assert inner.closed and guarded.__name__ == "graded"
