"""Diagnostic job kinds for the grading pool tests: stuck, starved and crashing answers, and what a worker imported.

`GradingPool(jobs=JOBS)` sends them to its workers, which import this module (it is on the parent's sys.path).
Each is a job function `(a, b, timeout) -> (score, status, detail)`; `a` is a number of seconds where one is needed.
"""

import os
import signal
import sys
import time


def spin(a: str, b: str, timeout: int | None) -> tuple[float, str, str]:
    """A stuck answer: burns CPU for `a` seconds, deaf to every timeout but the kill."""
    end = time.monotonic() + float(a)
    while time.monotonic() < end:
        pass
    return 1.0, "done", ""


def sleep(a: str, b: str, timeout: int | None) -> tuple[float, str, str]:
    """An answer that takes `a` seconds of wall time but no CPU (blocked, or starved)."""
    end = time.monotonic() + float(a)
    while time.monotonic() < end:
        time.sleep(0.01)
    return 1.0, "done", ""


def crash(a: str, b: str, timeout: int | None) -> tuple[float, str, str]:
    """A worker that dies like a segfault."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def modules(a: str, b: str, timeout: int | None) -> tuple[float, str, str]:
    """The heavy modules loaded in the worker, and whether it re-ran the parent's script (`__main__=<file>`)."""
    heavy = ("torch", "trl", "transformers", "datasets", "numpy", "math_verify")
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return 1.0, ",".join(m for m in heavy if m in sys.modules), f"__main__={main_file}"


JOBS = {"spin": spin, "sleep": sleep, "crash": crash, "modules": modules}
