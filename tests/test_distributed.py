"""Two CPU ranks under torchrun: cross-rank dynamic sampling (DeepSpeed runs: tests/test_launch.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
SCRIPT = Path(__file__).with_name("dist_dler.py")


def torchrun(model_dir, output_dir, timeout=400, mode="balance", expect_failure=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "DLER_TEST_MODE": mode}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        model_dir,
        str(output_dir),
    ]
    # A session of its own, so that a hang kills torchrun's workers too instead of leaving them orphaned.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun hung for {timeout}s:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    if expect_failure:
        return proc.returncode, stdout + stderr
    assert proc.returncode == 0, stdout[-3000:] + stderr[-6000:]
    return [json.loads((output_dir / f"result-{r}.json").read_text()) for r in (0, 1)]


def test_uneven_ranks_rebalance_and_match_single_process_advantages(tiny_model_dir, tmp_path):
    results = torchrun(tiny_model_dir, tmp_path)
    for r in results:
        assert r["batch"] == 16, "each rank trains on exactly its share"
        assert r["moved"] >= 4, "rank 0 kept nothing, so rank 1's surplus groups had to move"
        assert r["rounds"] >= 2
        assert r["max_error"] < 1e-5, "advantages differ from the single-process formula on the global batch"
        assert r["num_items"] == r["global_tokens"]
        assert r["steps"] == 2


def test_no_signal_anywhere_stops_every_rank_at_the_same_step_with_counts(tiny_model_dir, tmp_path):
    results = torchrun(tiny_model_dir, tmp_path, mode="exhaust")
    assert results[0]["error"] and results[0]["error"] == results[1]["error"]
    assert results[0]["step"] == results[1]["step"] == 0
    assert "0 of the 8 groups with signal after 2 rounds" in results[0]["error"]  # 2 ranks x 4 groups
    assert "16 groups scored all zero, 0 all positive" in results[0]["error"]


def test_no_signal_without_a_round_limit_stops_every_rank_after_a_pass_over_the_data(tiny_model_dir, tmp_path):
    results = torchrun(tiny_model_dir, tmp_path, mode="unlimited")
    assert results[0]["error"] and results[0]["error"] == results[1]["error"]
    assert results[0]["step"] == results[1]["step"] == 0
    assert "0 of the 8 groups with signal after 2 rounds, which drew 16 prompts" in results[0]["error"]
    assert "16 groups scored all zero" in results[0]["error"]


def test_generating_less_agrees_across_ranks_and_trains_carried_groups(tiny_model_dir, tmp_path):
    results = torchrun(tiny_model_dir, tmp_path, mode="generating_less")
    for r in results:
        assert r["same_bookkeeping"], "carry buffer, skip history or kept fraction differ between ranks"
        assert r["carried"] > 0, "no carried group reached training"
        assert r["rows_held_by_owner_only"] and r["carry_file"]
        assert r["steps"] == 8
    assert results[0]["rounds"] == results[1]["rounds"]


def test_a_reward_that_raises_on_one_rank_stops_both_with_its_message(tiny_model_dir, tmp_path):
    started = time.monotonic()
    returncode, output = torchrun(tiny_model_dir, tmp_path, timeout=240, mode="raise", expect_failure=True)
    assert returncode != 0 and "the grader broke on rank 1" in output
    assert "raises_on_rank_1" in output  # the reward guard names the function
    assert time.monotonic() - started < 200, "the waiting rank was not stopped promptly"
