"""Reward functions that raise, return non-finite rewards or hang fail naming the function (and the sample)."""

import math
import signal
import threading
import time

import pytest

from dler.reward_guard import REPEAT_SECONDS, GuardedReward, RewardFunctionError, RewardTimeout

PROMPTS = ["p0", "p1", "p2"]
COMPLETIONS = ["c0", "c1", "bad"]


def call(func, **extra):
    return GuardedReward(func, "my_reward")(
        prompts=PROMPTS, completions=COMPLETIONS, completion_ids=[[1], [2], [3]], answer=["1", "2", "3"], **extra
    )


def test_exception_names_the_function_and_the_failing_sample():
    def fragile(completions, answer, **kwargs):
        return [1.0 / (c != "bad") for c in completions]

    with pytest.raises(
        RewardFunctionError, match=r"'my_reward' raised ZeroDivisionError.*sample 2 \(prompt: p2; completion: bad\)"
    ):
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


# ---- the deadline (DLERConfig.reward_timeout) ----


def timed(func, timeout, name="my_reward"):
    guarded = GuardedReward(func, name, timeout=timeout)
    start = time.monotonic()
    try:
        return guarded(prompts=PROMPTS, completions=COMPLETIONS), time.monotonic() - start
    finally:
        assert signal.getsignal(signal.SIGINT) is HANDLER  # SIGINT's handler is restored after every call


HANDLER = signal.getsignal(signal.SIGINT)


@pytest.mark.parametrize("hang", ["sleep", "busy"])
def test_a_hanging_function_is_interrupted_naming_itself(hang):
    def stuck(completions, **kwargs):
        if hang == "sleep":
            time.sleep(30)  # a blocking call: interrupted by the signal, not only at the next bytecode
        else:
            while True:
                pass

    start = time.monotonic()
    with pytest.raises(
        RewardTimeout,
        match=r"'slow_grader' did not return within reward_timeout=0.5 s on a batch of 3 "
        r"completions\. Make it faster, raise DLERConfig.reward_timeout",
    ) as caught:
        timed(stuck, 0.5, name="slow_grader")
    assert 0.45 < time.monotonic() - start < 2.0
    assert isinstance(caught.value, RewardFunctionError)
    assert signal.getsignal(signal.SIGINT) is HANDLER


def test_an_interrupt_swallowed_by_the_function_is_repeated():
    def careless(completions, **kwargs):
        try:
            time.sleep(30)
        except BaseException:  # a bare `except:` around the slow part
            pass
        time.sleep(30)

    start = time.monotonic()
    with pytest.raises(RewardTimeout, match="'my_reward'"):
        timed(careless, 0.3)
    assert time.monotonic() - start < 0.3 + REPEAT_SECONDS + 1.0


def test_a_fast_function_is_untouched_and_no_interrupt_arrives_later():
    def just_in_time(completions, **kwargs):
        time.sleep(0.4)
        return [1.0] * len(completions)

    rewards, took = timed(just_in_time, 0.5)
    assert rewards == [1.0] * 3 and took < 0.5
    time.sleep(1.0)  # a late watchdog would interrupt this sleep with KeyboardInterrupt
    assert timed(lambda completions, **kw: [0.0] * len(completions), 0.5)[0] == [0.0] * 3
    time.sleep(0.6)


def test_no_deadline_with_none_or_zero():
    def slowish(completions, **kwargs):
        time.sleep(0.3)
        return [1.0] * len(completions)

    for timeout in (None, 0):
        assert GuardedReward(slowish, "r", timeout=timeout).timeout is None
    assert timed(slowish, None)[0] == [1.0] * 3
    with pytest.raises(RewardTimeout):  # the same function under a deadline
        timed(slowish, 0.1)
    with pytest.raises(ValueError, match="timeout"):
        GuardedReward(slowish, "r", timeout=-1)


def test_math_reward_keeps_its_own_deadlines():
    from dler.rewards import MathReward

    assert GuardedReward(MathReward(num_workers=0), "math", timeout=5.0).timeout is None

    class OwnDeadlines:  # any reward function can say so, not only dler's (the guard imports no reward)
        has_own_deadlines = True

        def __call__(self, completions, **kwargs):
            return [1.0] * len(completions)

    assert GuardedReward(OwnDeadlines(), "own", timeout=5.0).timeout is None
    OwnDeadlines.has_own_deadlines = "yes"  # only a true bool counts
    assert GuardedReward(OwnDeadlines(), "own", timeout=5.0).timeout == 5.0


def test_keyboard_interrupt_from_the_function_propagates_unchanged():
    interrupt = KeyboardInterrupt("user pressed Ctrl-C")

    def interrupted(completions, **kwargs):
        raise interrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        timed(interrupted, 5.0)
    assert caught.value is interrupt


def test_a_real_sigint_during_the_call_is_a_keyboard_interrupt():
    def waits(completions, **kwargs):
        time.sleep(30)

    threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as caught:
        timed(waits, 5.0)
    assert type(caught.value) is KeyboardInterrupt and time.monotonic() - start < 2.0


def test_outside_the_main_thread_the_deadline_is_skipped_with_a_warning(caplog):
    outcome = []

    def slowish(completions, **kwargs):
        time.sleep(0.3)
        return [1.0] * len(completions)

    guarded = GuardedReward(slowish, "threaded", timeout=0.1)
    worker = threading.Thread(target=lambda: outcome.append(guarded(prompts=PROMPTS, completions=COMPLETIONS)))
    with caplog.at_level("WARNING", logger="dler.reward_guard"):
        worker.start()
        worker.join(5)
    assert outcome == [[1.0] * 3]
    assert "'threaded' runs without its 0.1 s reward_timeout" in caplog.text


def test_reward_timeout_config():
    from dler import DLERConfig

    base = dict(output_dir="unused", use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=16)
    assert DLERConfig(**base).reward_timeout == 600.0
    assert DLERConfig(**base, reward_timeout=None).reward_timeout is None
    assert DLERConfig(**base, reward_timeout=0).reward_timeout == 0
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="reward_timeout"):
            DLERConfig(**base, reward_timeout=bad)
