"""Reward functions that fail loudly: an exception, a non-finite reward or a hang names the function and the sample.

A reward function that raises inside TRL surfaces as a bare traceback from somewhere in a batch of thousands, a
NaN or infinite reward flows silently into the advantages, and a reward function that never returns stalls the run
forever. `GuardedReward` wraps a plain reward function: on an exception it re-runs the batch one sample at a time to
find the row that fails, it refuses rewards that are NaN or infinite (None still means "does not apply", as in TRL),
and it gives each call a deadline (`DLERConfig.reward_timeout`).

The deadline keeps the function in the main thread (graders such as math-verify time themselves out with SIGALRM,
which works there only). A watchdog thread sends SIGINT to the main thread when the deadline passes; while the call
runs, a SIGINT handler of its own turns that signal into `RewardTimeout` and hands any other SIGINT (a real Ctrl-C)
to the handler it replaced, so Ctrl-C still raises KeyboardInterrupt. A real signal, unlike
`_thread.interrupt_main()`, also cuts short a blocking `time.sleep`, lock or I/O wait. The watchdog repeats the
signal every second until the call ends, in case the function swallowed it (a bare `except:`), and never sends one
once the call has ended. Code that stays inside one long C call (e.g. a regex that backtracks forever) is
interrupted only when it returns to the interpreter: such work belongs in worker processes that can be killed, as
`dler.rewards.MathReward` does.
"""

from __future__ import annotations

import _thread
import logging
import math
import signal
import threading
import time
from typing import Any

from dler.trl_keywords import TRL_CONTROL_KWARGS  # TRL's, not dataset columns

logger = logging.getLogger(__name__)

REPEAT_SECONDS = 1.0  # the watchdog repeats its interrupt this often until the call ends
FLUSH_SECONDS = 2.0  # at most this long, after the call, for an interrupt already sent to be handled


class RewardFunctionError(RuntimeError):
    """A reward function raised, returned a reward that is not a finite number, or ran past its deadline."""


class RewardTimeout(RewardFunctionError):
    """A reward function did not return within `DLERConfig.reward_timeout` seconds."""


class _DeadlineExpired(BaseException):
    """Raised in the main thread by the deadline's SIGINT handler. A BaseException, so that `except Exception` in
    the reward function does not catch it."""

    def __init__(self, deadline: _Deadline):
        super().__init__(f"interrupted here after {deadline.seconds:g} s (reward_timeout)")
        self.deadline = deadline


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _has_own_deadlines(func) -> bool:
    """A reward function that times out its own work (it says so with a true `has_own_deadlines` attribute, as dler's
    math grader does: each answer in worker processes, `answer_timeout`, `batch_timeout`)."""
    return getattr(func, "has_own_deadlines", False) is True


class _Deadline:
    """SIGINT to the main thread `seconds` after `start()`, as `_DeadlineExpired`, until `stop()`. Main thread only.

    The watchdog sends a signal only while the call runs (`_stopping` is False, checked under `_lock`) and only when
    the previous one has been handled (`_pending` is False), so after `stop()` has passed the lock and seen
    `_pending` clear, no signal of this deadline is on its way: none can reach the code after the call.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._stopping = False
        self._pending = False  # an interrupt was sent and its handler has not run yet
        self._installed = False
        self._previous = None

    def start(self) -> None:
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        self._installed = True
        threading.Thread(target=self._watch, name="dler-reward-deadline", daemon=True).start()

    def _watch(self) -> None:  # watchdog thread
        wait = self.seconds
        while not self._done.wait(wait):
            with self._lock:
                if self._stopping:
                    return
                if not self._pending:
                    self._pending = True
                    if hasattr(signal, "pthread_kill"):
                        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                    else:  # no pthread_kill (Windows): interrupts Python code, but not a blocking sleep
                        _thread.interrupt_main()
            wait = REPEAT_SECONDS

    def _on_sigint(self, signum, frame) -> None:  # main thread
        if self._pending:  # the watchdog's
            self._pending = False
            if not self._stopping:
                raise _DeadlineExpired(self)
            return
        previous = self._previous  # a real Ctrl-C: what the replaced handler would have done
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # the default action: the process ends
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def stop(self) -> None:
        """Idempotent; may itself be interrupted by `_DeadlineExpired` until `_stopping` is set (then call again)."""
        self._stopping = True
        with self._lock:  # the watchdog is not sending, and will not send again
            self._done.set()
        limit = time.monotonic() + FLUSH_SECONDS
        while self._pending and time.monotonic() < limit:  # a signal already sent: let it arrive while ours is
            time.sleep(0.001)  # installed (the handler returns quietly now)
        if self._pending:
            logger.warning("reward deadline: an interrupt sent to the main thread was not delivered (SIGINT blocked?)")
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


class GuardedReward:
    """Wraps a synchronous reward function; everything else (name, `close`, attributes) passes through.

    `timeout`: seconds each call may take (None or 0: no deadline). dler's `MathReward` keeps its own per-answer
    deadlines and gets none here.
    """

    def __init__(self, func, name: str, timeout: float | None = None):
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0 (0 or None: no deadline), got {timeout}")
        if not timeout or math.isinf(timeout) or _has_own_deadlines(func):
            timeout = None
        self.func, self.name, self.timeout = func, name, timeout
        self.__name__ = getattr(func, "__name__", name)
        self._warned_no_deadline = False

    def __getattr__(self, attribute):
        return getattr(self.func, attribute)

    def _one_sample(self, i: int, n: int, kwargs: dict) -> dict:
        return {
            k: ([v[i]] if isinstance(v, list) and len(v) == n and k not in TRL_CONTROL_KWARGS else v)
            for k, v in kwargs.items()
        }

    def _describe(self, i: int, kwargs: dict) -> str:
        return f"sample {i} (prompt: {_short(kwargs['prompts'][i])}; completion: {_short(kwargs['completions'][i])})"

    def _deadline_possible(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            why = "it is called outside the main thread, where no deadline can interrupt it"
        elif signal.getsignal(signal.SIGINT) is None:
            why = "SIGINT has a handler installed outside Python, which the deadline could not restore"
        else:
            return True
        if not self._warned_no_deadline:
            self._warned_no_deadline = True
            logger.warning("reward function %r runs without its %s s reward_timeout: %s", self.name, self.timeout, why)
        return False

    def _within_deadline(self, call, what: str):
        """`call()`, or `RewardTimeout` (the message ends with `what`) when it has not returned in `self.timeout` s."""
        if self.timeout is None or not self._deadline_possible():
            return call()
        deadline = _Deadline(self.timeout)
        expired = None
        returned = False
        try:
            deadline.start()
            result = call()
            returned = True
        except _DeadlineExpired as error:
            if error.deadline is not deadline:  # an enclosing deadline's
                raise
            expired = error
        finally:
            interrupt = None
            while True:  # our interrupt, or a real Ctrl-C, may land inside stop(): stop again, then raise the latter
                try:
                    deadline.stop()
                    break
                except _DeadlineExpired as error:
                    expired = expired or error
                except KeyboardInterrupt as error:
                    interrupt = error
            if interrupt is not None:
                raise interrupt
        if returned:  # finished just as the deadline passed: the rewards are there
            return result
        raise RewardTimeout(
            f"reward function {self.name!r} did not return within reward_timeout={self.timeout:g} s {what}. Make it "
            "faster, raise DLERConfig.reward_timeout (None or 0: no deadline), or grade in worker processes with "
            "their own deadlines, as dler.rewards.MathReward does"
        ) from expired

    def __call__(self, **kwargs):
        n = len(kwargs["completions"])
        try:
            rewards = self._within_deadline(lambda: self.func(**kwargs), f"on a batch of {n} completions")
        except RewardTimeout:
            raise
        except Exception as error:
            self._name_failing_sample(error, n, kwargs)
        for i, reward in enumerate(rewards):
            if reward is None:
                continue
            if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
                raise RewardFunctionError(
                    f"reward function {self.name!r} returned {reward!r} for {self._describe(i, kwargs)}: return a "
                    "finite number, or None where the function does not apply"
                )
        return rewards

    def _name_failing_sample(self, error: Exception, n: int, kwargs: dict):
        """Re-run the batch one sample at a time (within a deadline of its own) and raise naming the one that fails."""
        raised = f"raised {type(error).__name__}: {error}"

        def find():
            for i in range(n):
                try:
                    self.func(**self._one_sample(i, n, kwargs))
                except Exception:
                    raise RewardFunctionError(
                        f"reward function {self.name!r} {raised} on {self._describe(i, kwargs)}"
                    ) from error

        what = (
            f"when re-run on the {n} completions one at a time, to find the one that fails (on the batch it {raised})"
        )
        self._within_deadline(find, what)
        raise RewardFunctionError(
            f"reward function {self.name!r} {raised} on a batch of {n} completions (each sample alone passes)"
        ) from error
