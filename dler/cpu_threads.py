"""CPU threads for the demo and CPU recipe runs: as many intra-op threads as cores are free, and OpenMP threads that
sleep instead of spinning while they wait.

Why: torch starts one intra-op thread per core and OpenMP makes idle threads spin. On a 2-core laptop with another
busy process, the two threads of a small matrix product wait on each other at every barrier while one of them is
descheduled, and the spinning one steals the CPU the other needs: the demo's warm start went from 0.15 s to 3.4 s
per step (`benchmarks/cpu_contention.py` measures it). One thread per *free* core and a passive wait policy keep a
busy machine at about the cost of sharing it.

It is applied at the entry points only (`python -m dler.demo`; a recipe's `main` and the experiments on a CPU
machine, `for_cpu_run`), before torch is imported where possible: the wait policy (`OMP_WAIT_POLICY`, `GOMP_SPINCOUNT`, `KMP_BLOCKTIME`) is read once,
when OpenMP starts with torch, so it is set only while torch is not loaded yet, and said otherwise. A user's own
`OMP_NUM_THREADS` or wait-policy variables are kept, and so is the thread count of a process that loaded torch before
(its code may have called `torch.set_num_threads`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

# Read by OpenMP when torch loads it: sleep at once when a thread has no work (GNU OpenMP, which torch's Linux wheels
# use, and Intel's).
PASSIVE_WAIT = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": "0"}


@dataclass(frozen=True)
class ThreadChoice:
    """What `configure` chose: `threads` None means the count was left as it was; `line` says what and why."""

    threads: int | None
    interop_threads: int | None
    line: str


def threads_for(free_cores: float, cores: int) -> int:
    """Intra-op threads for `free_cores` idle cores (a measured, fractional count) out of `cores` usable ones: the
    free cores rounded to the nearest whole one, at least 1 and at most `cores`."""
    return max(1, min(cores, math.floor(free_cores + 0.5)))


def idle_fractions(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict[int, float]:
    """Per CPU, the share of the interval it was idle, from two `(idle, total)` jiffy readings of /proc/stat."""
    shares = {}
    for cpu, (idle0, total0) in before.items():
        if cpu in after:
            idle1, total1 = after[cpu]
            shares[cpu] = (idle1 - idle0) / (total1 - total0) if total1 > total0 else 1.0
    return shares


def read_proc_stat(path: str = "/proc/stat") -> dict[int, tuple[int, int]]:
    """`{cpu: (idle jiffies, total jiffies)}` (idle includes iowait); empty where /proc/stat does not exist."""
    counts = {}
    try:
        with open(path) as f:
            for line in f:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    numbers = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
                    counts[int(name[3:])] = (numbers[3] + numbers[4], sum(numbers))
    except OSError:
        return {}
    return counts


def free_cores(sample_s: float = 0.1) -> tuple[float, int, str]:
    """`(free, usable, how)`: idle cores among those this process may run on, measured over `sample_s` seconds of
    /proc/stat (without it: the 1-minute load average), and how it was measured."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    before = read_proc_stat()
    if before:
        time.sleep(sample_s)
        shares = idle_fractions(before, read_proc_stat())
        free = sum(shares.get(cpu, 1.0) for cpu in usable)
        return free, len(usable), f"{free:.1f} of {len(usable)} cores idle over {sample_s:g} s"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    free = max(0.0, len(usable) - load)
    return free, len(usable), f"{len(usable)} cores, load average {load:.1f}"


def set_wait_policy() -> str:
    """Make OpenMP threads sleep while they wait (a user's own values kept); only effective before torch loads."""
    if "torch" in sys.modules:
        return "OpenMP wait policy unchanged (torch was loaded before; it is read when OpenMP starts)"
    kept = [name for name in PASSIVE_WAIT if name in os.environ]
    for name, value in PASSIVE_WAIT.items():
        os.environ.setdefault(name, value)
    mine = "OpenMP threads sleep while waiting (OMP_WAIT_POLICY=PASSIVE)"
    return mine + (f", your {', '.join(kept)} kept" if kept else "")


def configure(requested: int | None = None, sample_s: float = 0.1) -> ThreadChoice:
    """Set the wait policy (if torch is not loaded yet), then torch's CPU threads (`set_threads`)."""
    torch_was_loaded = "torch" in sys.modules
    return set_threads(requested, torch_was_loaded, set_wait_policy(), sample_s)


def set_threads(requested: int | None, torch_was_loaded: bool, wait: str, sample_s: float = 0.1) -> ThreadChoice:
    """Choose and apply torch's CPU threads; return the choice with one line saying what and why (`wait`: what
    `set_wait_policy` said). `requested` (the demo's `--threads`) wins; then a user's `OMP_NUM_THREADS`; a process
    that had loaded torch before keeps its count (its code may have set it); otherwise one thread per free core."""
    import torch

    threads, why = None, ""
    if requested:
        threads, why = requested, "as requested"
    elif os.environ.get("OMP_NUM_THREADS"):
        why = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} is yours"
    elif torch_was_loaded:
        why = "left as they were: torch was loaded before"
    else:
        free, usable, how = free_cores(sample_s)
        threads, why = min(threads_for(free, usable), torch.get_num_threads()), how
    interop = None
    if threads is not None:
        torch.set_num_threads(threads)
        if not torch_was_loaded:  # only possible before any inter-op work started
            try:
                torch.set_num_interop_threads(threads)
                interop = threads
            except RuntimeError:
                pass
    count = torch.get_num_threads()
    interop_text = f", {interop} inter-op" if interop else ""
    line = f"CPU threads: {count} intra-op{interop_text} ({why}); {wait}"
    return ThreadChoice(threads, interop, line)


def on_cpu_machine(argv: list[str]) -> bool:
    """Whether a run will train on the CPU, decided before torch loads (it must be, for the wait policy): `--use_cpu`
    given, or no GPU device visible (no NVIDIA or AMD device node, or CUDA_VISIBLE_DEVICES set empty)."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--use_cpu=") else None
        if arg == "--use_cpu":
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "true"
        if value is not None:
            return value.lower() in ("true", "1", "yes")
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return True
    return not any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd"))


def for_cpu_run(argv: list[str]):
    """A recipe run's policy, in two steps: on a CPU machine, set the wait policy now (call this before torch loads)
    and return the function that sets the threads and prints its line on rank 0 once the run will train; None on a
    GPU machine."""
    if not on_cpu_machine(argv):
        return None
    torch_was_loaded, wait = "torch" in sys.modules, set_wait_policy()

    def set_and_say() -> None:
        line = set_threads(None, torch_was_loaded, wait).line
        if os.environ.get("RANK", "0") == "0":
            print(line, file=sys.stderr, flush=True)

    return set_and_say
