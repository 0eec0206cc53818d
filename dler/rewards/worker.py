"""What a grading worker process runs: its job functions and its loop. The parent side is `dler.rewards.pool`.

A worker imports only `dler.rewards` and math-verify (never torch), warms math-verify up, reports ready, then
grades jobs until told to stop; it exits by itself when its parent dies, even by SIGKILL.

Job kinds: "grade" (a = gold, b = prediction) and "gold" (a = gold, b unused) under the dler grader,
"grade_released" and "gold_released" the same under DLER's released grader. A pool may add kinds of its own
(`GradingPool(jobs=...)`): module-level functions `(a, b, timeout) -> (score, status, detail)`, importable by the
worker since they reach it pickled by reference.
"""

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

from dler.rewards.status import ERROR

Job = Callable[[str, str, int | None], tuple[float, str, str]]


def run_job(kind: str, a: str, b: str, timeout: int | None, jobs: dict[str, Job] | None = None):
    """One job: a grading kind, or one of `jobs`. Also run in-process by `MathReward(num_workers=0)`."""
    if jobs and kind in jobs:
        return jobs[kind](a, b, timeout)
    from dler.rewards import grading

    if kind == "grade":
        return grading.grade(a, b, timeout)
    if kind == "gold":
        return grading.check_gold(a, timeout)
    if kind == "grade_released":
        return grading.grade_released(a, b, timeout)
    if kind == "gold_released":
        return grading.check_gold_released(a, timeout)
    raise ValueError(f"unknown job kind {kind!r}")


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def _die_with_parent(parent_pid: int | None, pdeathsig: bool) -> None:
    """Exit when the trainer dies, even by SIGKILL: the kernel's parent-death signal (Linux; only when the
    spawning thread is the main thread, since it fires when that thread ends), and a thread polling getppid.
    With forkserver the parent is the fork server, which itself exits with the trainer (parent_pid None)."""
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    parent = os.getppid()
    if parent_pid is not None and parent != parent_pid:  # died before the signal was armed
        os._exit(0)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _guarded(kind: str, a: str, b: str, timeout: int | None, jobs: dict[str, Job] | None):
    """`run_job`, with any exception (math-verify's TimeoutException is a BaseException) as an "error" status."""
    try:
        return run_job(kind, a, b, timeout, jobs)
    except BaseException as exc:
        from dler.rewards.grading import describe_error  # loaded already: the worker warmed it up

        return 0.0, ERROR, describe_error(exc)


def worker_main(
    conn, parent_pid: int | None, timeout: int | None, pdeathsig: bool = False, jobs: dict[str, Job] | None = None
) -> None:
    """Worker loop: receive (batch, kind, [(job, a, b), ...]), send (batch, job, score, status, detail, CPU
    seconds) per job; None or a closed pipe stops it. The CPU seconds let the parent time each answer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    _die_with_parent(parent_pid, pdeathsig)
    try:
        from dler.rewards import grading

        grading.warm_up(timeout)
        conn.send(("ready", os.getpid(), time.process_time()))
    except BaseException:
        conn.send(("fatal", traceback.format_exc()))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        batch, kind, items = msg
        for job, a, b in items:
            result = _guarded(kind, a, b, timeout, jobs)
            try:
                conn.send((batch, job, *result, time.process_time()))
            except (BrokenPipeError, OSError):
                return
