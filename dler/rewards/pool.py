"""A persistent pool of grading processes that cannot stall the trainer.

Why processes: math-verify's timeouts use SIGALRM, which only works in a process's main thread, and some sympy
work (huge integer powers) cannot be interrupted at all. So each worker is a separate process started with the
"spawn" (default) or "forkserver" context (never fork: the trainer holds torch/CUDA/NCCL state), and it may be
killed at any time:

- every answer has a deadline: a worker that spent `answer_timeout` seconds of CPU on one answer is SIGKILLed and
  replaced, and the answer scores 0 with status "deadline". CPU, not wall time, so that workers merely starved by
  an overloaded machine are not killed (the respawns would only add load); wall time is still capped at 3x;
- every call has a deadline: whatever is unfinished after `batch_timeout` scores 0 ("batch_deadline");
- a worker that dies (segfault, OOM kill) is detected through its process sentinel, its answer scores 0
  ("worker_died") and it is replaced: no call ever waits on a dead process.

Jobs go out in chunks (one message for many answers); the worker reports each answer as it finishes, so the
parent knows when the answer in progress started and per-answer deadlines stay exact. Each worker has its own
pipe: killing one never corrupts a shared queue.

Workers (`dler.rewards.worker`) import only `dler.rewards` and math-verify. Spawned processes normally re-import
the parent's `__main__` script (a training script: torch, trl, and any unguarded top-level code); the pool hides
`__main__` while it starts a worker so that this does not happen. Shutdown: `close()`, context-manager exit,
garbage collection and interpreter exit all stop the workers; a worker also exits by itself when its parent dies.
"""

import logging
import math
import multiprocessing
import os
import sys
import threading
import time
import types
import weakref
from collections import deque
from multiprocessing.connection import wait

from dler.rewards.status import BATCH_DEADLINE, DEADLINE, WORKER_DIED
from dler.rewards.worker import Job, worker_main

logger = logging.getLogger(__name__)

_SPAWN_LOCK = threading.Lock()
_MAX_START_FAILURES = 3
_STARVED_GRACE = 3.0  # a busy worker that got little CPU may run this many deadlines (wall) before the kill
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, from /proc; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def default_num_workers() -> int:
    """min(4, CPUs of this rank): the CPUs this process may use, shared among the ranks of this node."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(4, cpus // max(1, local_ranks)))


class _Worker:
    """The parent's record of one worker process: its pipe, and the answers it was sent and is working on."""

    __slots__ = ("proc", "conn", "ready", "started", "chunk", "pos", "t_item", "cpu", "fatal")

    def __init__(self, proc, conn):
        self.proc, self.conn = proc, conn
        self.ready = False
        self.started = time.monotonic()
        self.chunk: list[int] = []  # job indices sent and not yet answered
        self.pos = 0  # chunk[pos] is the answer in progress
        self.t_item = 0.0  # when chunk[pos] started
        self.cpu = 0.0  # the worker's CPU seconds when it last reported (so: when chunk[pos] started)
        self.fatal = ""


class _Call:
    """One `run` call: its jobs, their results so far, the jobs not yet handed out, and its deadline."""

    __slots__ = ("batch", "kind", "items", "results", "pending", "left", "deadline")

    def __init__(self, batch: int, kind: str, items: list[tuple[str, str]], deadline: float):
        self.batch, self.kind, self.items, self.deadline = batch, kind, items, deadline
        self.results: list = [None] * len(items)
        self.pending = deque(range(len(items)))  # jobs not handed out, or handed back by a failed worker
        self.left = len(items)  # jobs without a result

    def resolve(self, job: int, result) -> None:
        self.results[job] = result
        self.left -= 1

    def fail_current(self, w: _Worker, status: str, detail: str) -> None:
        """Score the worker's answer in progress 0 and put the rest of its chunk back in the queue."""
        if not w.chunk:
            return
        self.resolve(w.chunk[w.pos], (0.0, status, detail))
        self.pending.extendleft(reversed(w.chunk[w.pos + 1 :]))
        w.chunk, w.pos = [], 0


def _stop_workers(workers: list, owner_pid: int, grace: float = 1.0) -> None:
    """Ask every worker to exit, then SIGKILL whatever is still there. Only the process that owns them acts."""
    if os.getpid() != owner_pid:
        return
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    end = time.monotonic() + grace
    for w in workers:
        w.proc.join(max(0.0, end - time.monotonic()))
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(1.0)
        w.conn.close()
    workers.clear()


class GradingPool:
    """Persistent grading processes with per-answer and per-batch deadlines.

    Args:
        num_workers: processes of this rank (default `default_num_workers()`: min(4, CPUs / local ranks)).
        answer_timeout: seconds of CPU one answer may use (wall time capped at 3x) before its worker is killed
            and replaced. math-verify's own timeout inside the worker is set to the same number of seconds.
        batch_timeout: seconds one `run` call may take; unfinished answers then score 0.
        chunk_size: most answers sent to a worker in one message.
        start_timeout: seconds a new worker may take to import math-verify and report ready.
        start_method: "spawn" (default) or "forkserver". Never fork.
        jobs: more job kinds for the workers, by name: module-level functions `(a, b, timeout) -> (score, status,
            detail)` that the workers can import (see `dler.rewards.worker`).

    Workers start lazily, on the first call. `run` is thread-safe (calls are serialised).
    """

    def __init__(
        self,
        num_workers: int | None = None,
        answer_timeout: float = 5.0,
        batch_timeout: float = 120.0,
        chunk_size: int = 16,
        start_timeout: float = 60.0,
        start_method: str = "spawn",
        jobs: dict[str, Job] | None = None,
    ):
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver' (never fork), got {start_method!r}")
        if answer_timeout <= 0 or batch_timeout <= 0:
            raise ValueError("answer_timeout and batch_timeout must be positive")
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        if self.num_workers < 1:
            raise ValueError(
                "GradingPool needs at least one worker (use num_workers=0 on MathReward to grade in-process)"
            )
        self.answer_timeout = float(answer_timeout)
        self.batch_timeout = float(batch_timeout)
        self.chunk_size = max(1, int(chunk_size))
        self.start_timeout = float(start_timeout)
        self.start_method = start_method
        self.jobs = dict(jobs or {})
        # math-verify's own alarm (wall clock, whole seconds) ends most slow answers without a respawn
        self.inner_timeout = max(1, int(self.answer_timeout))
        self.stats = {"jobs": 0, "killed": 0, "died": 0, "started": 0, "batch_deadlines": 0}
        self._lock = threading.RLock()
        self._workers: list[_Worker] = []
        self._owner = os.getpid()
        self._batch = 0
        self._start_failures = 0
        self._finalizer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        raise TypeError("GradingPool holds live processes and cannot be pickled")

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.proc.pid for w in self._workers]

    def start(self, wait_ready: bool = False) -> None:
        """Start the workers now instead of on first use (they import math-verify in the background).

        With `wait_ready`, return once every worker has reported ready (at most `start_timeout`).
        """
        with self._lock:
            self._start()
            end = time.monotonic() + self.start_timeout
            while wait_ready and any(not w.ready for w in self._workers) and time.monotonic() < end:
                handles = [h for w in self._workers if not w.ready for h in (w.conn, w.proc.sentinel)]
                wait(handles, max(0.0, end - time.monotonic()))
                for w in list(self._workers):
                    if not w.ready:
                        self._drain(w)
                        if not w.ready and not w.proc.is_alive():
                            self._replace(w, kill=False)

    def _start(self) -> None:
        with self._lock:
            if os.getpid() != self._owner:  # inherited through a fork: these workers belong to the parent
                self._workers, self._owner, self._finalizer = [], os.getpid(), None
            if self._finalizer is None or not self._finalizer.alive:
                self._workers = []
                self._finalizer = weakref.finalize(self, _stop_workers, self._workers, self._owner)
            while len(self._workers) < self.num_workers:
                self._workers.append(self._spawn())

    def close(self) -> None:
        """Stop every worker (they finish nothing). The pool restarts lazily if used again."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()  # runs _stop_workers once
                self._finalizer = None
            self._workers = []

    def _spawn(self) -> _Worker:
        ctx = multiprocessing.get_context(self.start_method)
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=worker_main,
            args=(
                child_conn,
                os.getpid() if self.start_method == "spawn" else None,
                self.inner_timeout,
                threading.current_thread() is threading.main_thread(),
                self.jobs,
            ),
            name="dler-math-grader",
            daemon=True,
        )
        with _SPAWN_LOCK:
            main = sys.modules.get("__main__")
            sys.modules["__main__"] = types.ModuleType("__main__")  # see module docstring
            try:
                proc.start()
            finally:
                if main is not None:
                    sys.modules["__main__"] = main
        child_conn.close()
        self.stats["started"] += 1
        return _Worker(proc, parent_conn)

    def _replace(self, w: _Worker, kill: bool) -> None:
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(1.0)
        w.conn.close()
        if w.fatal or not w.ready:
            self._start_failures += 1
            if self._start_failures >= _MAX_START_FAILURES:
                self.close()
                raise RuntimeError(
                    f"math grading workers failed to start {_MAX_START_FAILURES} times in a row"
                    + (f"; last error:\n{w.fatal}" if w.fatal else " (no error reported: killed or too slow?)")
                )
        i = self._workers.index(w)
        self._workers[i] = self._spawn()

    def run(self, kind: str, items: list[tuple[str, str]]) -> list[tuple[float, str, str]]:
        """Run jobs `(a, b)` of one kind on the workers: "grade" / "grade_released": (gold, prediction);
        "gold" / "gold_released": (gold, ""); or a kind of `jobs`. See `dler.rewards.worker`.

        Returns one (score, status, detail) per item, in order, always within about `batch_timeout` seconds.
        """
        if not items:
            return []
        with self._lock:
            if os.getpid() != self._owner or len(self._workers) < self.num_workers:
                self._start()
            self.stats["jobs"] += len(items)
            self._batch += 1
            call = _Call(self._batch, kind, items, time.monotonic() + self.batch_timeout)
            while call.left and time.monotonic() < call.deadline:
                self._dispatch(call)
                self._wait(call)
                self._enforce_deadlines(call)
            if call.left:
                self._give_up(call)
            return call.results

    def _dispatch(self, call: _Call) -> None:
        """Hand a chunk of the queue to every idle worker; replace an idle one that died (OOM killer, ...), seen by
        its sentinel too: `is_alive()` stays True when another part of the process reaped its exit status."""
        for w in list(self._workers):
            if not call.pending:
                break
            if not w.ready or w.chunk:
                continue
            if not w.proc.is_alive() or wait([w.proc.sentinel], 0):  # nothing of ours was lost
                self.stats["died"] += 1
                self._replace(w, kill=False)
                continue
            size = max(1, min(self.chunk_size, math.ceil(len(call.pending) / len(self._workers))))
            chunk = [call.pending.popleft() for _ in range(min(size, len(call.pending)))]
            try:
                w.conn.send((call.batch, call.kind, [(j, *call.items[j]) for j in chunk]))
            except (OSError, ValueError):  # died while idle
                call.pending.extendleft(reversed(chunk))
                continue  # its sentinel fires in `_wait`
            w.chunk, w.pos, w.t_item = chunk, 0, time.monotonic()

    def _wait(self, call: _Call) -> None:
        """Sleep until a result, a death, or the nearest deadline; collect results and replace dead workers."""
        deadlines = [call.deadline]
        for w in self._workers:
            if w.chunk:
                deadlines.append(self._next_check(w))
            elif not w.ready:
                deadlines.append(w.started + self.start_timeout)
        timeout = max(0.0, min(deadlines) - time.monotonic())
        handles = [h for w in self._workers for h in (w.conn, w.proc.sentinel)]
        ready = set(wait(handles, timeout))
        for w in list(self._workers):
            dead = w.proc.sentinel in ready
            if w.conn in ready or dead:
                self._drain(w, call)
                dead = dead or not w.proc.is_alive()
            if dead:
                call.fail_current(w, WORKER_DIED, "worker process died")
                self.stats["died"] += 1
                self._replace(w, kill=False)

    def _enforce_deadlines(self, call: _Call) -> None:
        """Kill and replace the workers whose answer in progress is overdue, and those too slow to start."""
        now = time.monotonic()
        for w in list(self._workers):
            if w.chunk and now - w.t_item > self.answer_timeout:
                self._drain(w, call)  # results that arrived at the last moment
                why = self._overdue(w) if w.chunk else ""
                if why:
                    call.fail_current(w, DEADLINE, why)
                    self.stats["killed"] += 1
                    self._replace(w, kill=True)
            elif not w.ready and now - w.started > self.start_timeout:
                self._replace(w, kill=True)

    def _give_up(self, call: _Call) -> None:
        """The batch deadline passed: unfinished answers score 0, and workers still busy on them are replaced."""
        self.stats["batch_deadlines"] += 1
        for j, r in enumerate(call.results):
            if r is None:
                call.results[j] = (0.0, BATCH_DEADLINE, f"over {self.batch_timeout:g}s for the batch")
        for w in list(self._workers):
            if w.chunk:  # its answers are no longer wanted
                w.chunk = []
                self._replace(w, kill=True)

    def _overdue(self, w: _Worker) -> str:
        """Why the answer in progress must be killed now, or "" to let it run a little longer: the deadline counts
        its CPU time (see the module docstring), and wall time up to `_STARVED_GRACE` times the deadline."""
        wall = time.monotonic() - w.t_item
        if wall <= self.answer_timeout:
            return ""
        cpu = _cpu_seconds(w.proc.pid)
        if cpu is None:  # no /proc: wall time only
            return f"over {self.answer_timeout:g}s"
        used = cpu - w.cpu
        if used >= self.answer_timeout or wall >= self.answer_timeout * _STARVED_GRACE:
            return f"{used:.1f}s CPU in {wall:.1f}s (deadline {self.answer_timeout:g}s)"
        return ""

    def _next_check(self, w: _Worker) -> float:
        """When to look at a busy worker's deadline again."""
        due = w.t_item + self.answer_timeout
        now = time.monotonic()
        if now < due:
            return due
        return min(now + max(0.02, self.answer_timeout / 10), w.t_item + self.answer_timeout * _STARVED_GRACE)

    def _drain(self, w: _Worker, call: _Call | None = None) -> None:
        """Read every message waiting from one worker: its start-up report, and its results for `call`."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "ready":
                    w.ready, w.cpu = True, msg[2]
                    self._start_failures = 0
                elif msg[0] == "fatal":
                    w.fatal = msg[1]
                elif call is not None and msg[0] == call.batch and w.chunk and msg[1] == w.chunk[w.pos]:
                    call.resolve(msg[1], msg[2:5])
                    w.cpu, w.pos, w.t_item = msg[5], w.pos + 1, time.monotonic()  # the next answer starts now
                    if w.pos == len(w.chunk):
                        w.chunk, w.pos = [], 0
                else:
                    logger.debug("discarding a stale grading result %r", msg[:2])
        except (EOFError, OSError):
            pass  # the process is gone; its sentinel says so
