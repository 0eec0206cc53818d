"""The grading pool never stalls: deadlines, killed and crashed workers, shutdown, several ranks."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import wait
from pathlib import Path

import pytest
from pool_jobs import JOBS

from dler.rewards import GradingPool, default_num_workers
from dler.rewards.pool import _STARVED_GRACE

CHILD = Path(__file__).with_name("rewards_child.py")
ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout=5.0) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture(scope="module")
def pool():
    with GradingPool(num_workers=2, answer_timeout=1.5, batch_timeout=20.0, chunk_size=4, jobs=JOBS) as p:
        p.start(wait_ready=True)
        yield p


def test_grades_in_order(pool):
    pairs = [("\\frac{1}{2}", "0.5"), ("3", "4"), ("(1, 2)", "(1,2)"), ("#", "1")] * 5
    results = pool.run("grade", pairs)
    assert [s for s, _, _ in results] == [1.0, 0.0, 1.0, 0.0] * 5
    assert [st for _, st, _ in results[:4]] == ["correct", "wrong", "correct", "invalid_gold"]
    assert pool.run("grade", []) == []


def test_workers_are_light_and_spawned(pool):
    (_, modules, detail), _ = pool.run("modules", [("", "")] * 2)
    assert "math_verify" in modules.split(",")
    assert not {"torch", "trl", "transformers"} & set(modules.split(","))
    assert detail == "__main__=None"  # the test runner's __main__ was not re-imported
    assert len(set(pool.pids)) == 2 and os.getpid() not in pool.pids


def test_stuck_answer_is_killed_and_replaced(pool):
    pids = pool.pids
    t = time.perf_counter()
    results = pool.run("spin", [("30", ""), ("0", ""), ("0", ""), ("0", "")])
    elapsed = time.perf_counter() - t
    assert results[0][:2] == (0.0, "deadline") and [r[1] for r in results[1:]] == ["done"] * 3
    assert "CPU" in results[0][2]
    assert elapsed < pool.answer_timeout * _STARVED_GRACE + 1.0
    assert len(set(pids) - set(pool.pids)) == 1 and pool.stats["killed"] >= 1
    assert wait_gone(set(pids) - set(pool.pids)) == []
    assert pool.run("grade", [("2", "2")])[0][1] == "correct"  # back to normal, replacement included


def test_adversarial_answers_without_prechecks_stay_within_the_deadline(pool):
    """The pool alone (no pre-checks) bounds what sympy may do: math-verify's alarm, then the kill."""
    pairs = [
        ("5", "5^{5^{5^5}}"),
        ("1", "10^{10^{10}}"),
        ("7", "(" * 40 + "7" + ")" * 40),  # (braces around a whole answer are stripped: they group nothing)
        ("1", "(10^{10})!"),
        ("\\frac{1}{2}", "0.5"),
        ("1024", "2^{10}"),
        ("(1, 2)", "(2, 1)"),
    ]
    t = time.perf_counter()
    results = pool.run("grade", pairs)
    elapsed = time.perf_counter() - t
    assert [s for s, _, _ in results] == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert {st for _, st, _ in results[:4]} <= {"timeout", "deadline", "wrong"}
    assert [st for _, st, _ in results[4:]] == ["correct", "correct", "wrong"]
    # 4 slow answers on 2 workers, each cut at ~1-1.5 s, plus respawns
    assert elapsed < 2 * 2 * pool.answer_timeout + 2.0


def test_worker_without_cpu_is_given_time_then_killed():
    """An answer that gets no CPU (a starved or blocked worker) is not killed at the deadline, only at 3x."""
    with GradingPool(num_workers=1, answer_timeout=0.5, batch_timeout=20.0, jobs=JOBS) as p:
        p.start(wait_ready=True)
        pid = p.pids[0]
        t = time.perf_counter()
        assert p.run("sleep", [("1.0", "")])[0][:2] == (1.0, "done")  # past the deadline, but no CPU used
        assert time.perf_counter() - t >= 1.0 and p.stats["killed"] == 0 and p.pids == [pid]
        t = time.perf_counter()
        assert p.run("sleep", [("30", "")])[0][1] == "deadline"
        assert 0.5 * _STARVED_GRACE - 0.1 < time.perf_counter() - t < 0.5 * _STARVED_GRACE + 1.0
        assert p.stats["killed"] == 1 and p.pids != [pid] and wait_gone([pid]) == []


def test_crashed_worker_is_replaced_without_deadlock(pool):
    pids = pool.pids
    results = pool.run("crash", [("", "")])
    assert results[0][:2] == (0.0, "worker_died")
    assert pool.stats["died"] >= 1 and pids != pool.pids
    assert pool.run("grade", [("1", "1"), ("2", "2"), ("3", "3")])[2][1] == "correct"


def test_worker_killed_while_idle_loses_nothing(pool):
    pool.start(wait_ready=True)  # idle, not still starting (the test before replaced a worker)
    victim = pool.pids[0]
    sentinel = pool._workers[0].proc.sentinel
    os.kill(victim, signal.SIGKILL)
    assert wait_gone([victim]) == []
    # gone from /proc as soon as its main thread is a zombie; dead for the pool once every thread is (the sentinel)
    assert wait([sentinel], timeout=5.0) == [sentinel]
    results = pool.run("grade", [(str(i), str(i)) for i in range(8)])
    assert [st for _, st, _ in results] == ["correct"] * 8, (results, victim, pool.pids, dict(pool.stats))  # requeued
    assert victim not in pool.pids


def test_errors_in_workers_are_reported(pool):
    ((score, status, detail),) = pool.run("no such job", [("", "")])
    assert (score, status) == (0.0, "error") and "ValueError" in detail and "no such job" in detail


def test_concurrent_callers_get_their_own_results(pool):
    """Caller i's answers are correct only at position i: results handed to the wrong caller would show."""
    out = {}

    def call(i):
        out[i] = pool.run("grade", [(str(i), str(i) if j == i else str(i + 1)) for j in range(4)])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert {i: [r[0] for r in out[i]] for i in out} == {i: [float(j == i) for j in range(4)] for i in range(4)}


def test_batch_deadline_returns_on_time_and_recovers():
    with GradingPool(num_workers=1, answer_timeout=10.0, batch_timeout=1.0, jobs=JOBS) as small:
        small.start(wait_ready=True)
        pid = small.pids[0]
        t = time.perf_counter()
        results = small.run("sleep", [("5", ""), ("5", "")])
        elapsed = time.perf_counter() - t
        assert [r[1] for r in results] == ["batch_deadline"] * 2
        assert 0.9 < elapsed < 2.0 and small.stats["batch_deadlines"] == 1
        assert wait_gone([pid]) == []  # the busy worker was killed, not left running
        small.batch_timeout = 30.0
        assert small.run("grade", [("4", "2^2")])[0][1] == "correct"  # the replacement grades
        pids = small.pids
    assert wait_gone(pids) == []  # context exit stops the workers


def test_forkserver_works_too():
    with GradingPool(num_workers=1, start_method="forkserver", answer_timeout=2.0, jobs=JOBS) as fs:
        assert fs.run("grade", [("\\frac{1}{2}", "0.5")])[0][1] == "correct"
        assert fs.run("crash", [("", "")])[0][1] == "worker_died"
        assert fs.run("grade", [("2", "2")])[0][1] == "correct"
        pids = fs.pids
    assert wait_gone(pids) == []


def test_close_and_restart():
    p = GradingPool(num_workers=1)
    assert p.pids == []  # lazy: nothing runs before the first use
    assert p.run("grade", [("1", "1")])[0][0] == 1.0
    pids = p.pids
    p.close()
    assert wait_gone(pids) == [] and p.pids == []
    assert p.run("grade", [("1", "1")])[0][0] == 1.0  # restarts on demand
    p.close()


def test_settings_are_validated(monkeypatch):
    with pytest.raises(ValueError, match="never fork"):
        GradingPool(start_method="fork")
    with pytest.raises(ValueError):
        GradingPool(num_workers=0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert default_num_workers() == 1  # many ranks per node: one worker each, no fork storm
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert 1 <= default_num_workers() <= 4


def _child(mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(CHILD), mode], stdout=subprocess.PIPE, text=True, env=env)


def test_worker_of_a_torch_script_skips_its_imports_and_exits_with_it():
    child = _child("modules")
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    info = json.loads(out.strip().splitlines()[-1])
    assert "torch" not in info["modules"].split(",") and info["detail"] == "__main__=None"
    assert wait_gone(info["pids"]) == []  # no close() in the script: interpreter exit stopped the worker


def test_workers_exit_when_their_parent_is_killed():
    child = _child("hang")
    pids = json.loads(child.stdout.readline())["pids"]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert wait_gone(pids, timeout=5.0) == []


@pytest.mark.distributed
def test_torchrun_two_ranks_one_worker_each():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(CHILD), "dist"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0 ok" in proc.stdout and "rank 1 ok" in proc.stdout
