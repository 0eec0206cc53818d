"""Long runs survive: a run killed with SIGKILL and started again ends where the uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("resume_run.py")
COMPARED = ("loss", "dler/shaped_reward", "dler/correctness", "dynamic_sampling/rounds", "dler/budget_mean")


def train(model_dir, output_dir, kill_at=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"KILL_AT": kill_at} if kill_at else {})}
    env.pop("KILL_AT", None) if not kill_at else None
    return subprocess.run(
        [sys.executable, str(SCRIPT), model_dir, str(output_dir)], env=env, capture_output=True, text=True, timeout=300
    )


def history(output_dir):
    state = json.loads((Path(output_dir) / "checkpoint-6" / "trainer_state.json").read_text())
    return [{k: h[k] for k in COMPARED if k in h} for h in state["log_history"] if "loss" in h]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = train(tiny_model_dir, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("kill_at", ["generation", "optimizer"])
def test_sigkill_then_restart_matches_the_uninterrupted_run(kill_at, uninterrupted, tiny_model_dir, tmp_path):
    killed = train(tiny_model_dir, tmp_path, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (tmp_path / "checkpoint-2").is_dir() and not (tmp_path / "checkpoint-4").exists()

    resumed = train(tiny_model_dir, tmp_path)  # the same command again, as a requeued job runs it
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = (
        load_file(uninterrupted / "final" / "model.safetensors"),
        load_file(tmp_path / "final" / "model.safetensors"),
    )
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6, msg=f"parameter {name} differs")
    got_history, expected_history = history(tmp_path), history(uninterrupted)
    assert [sorted(h) for h in got_history] == [sorted(h) for h in expected_history]
    for step, (g, e) in enumerate(zip(got_history, expected_history, strict=True), 1):
        assert [g[k] for k in sorted(g)] == pytest.approx([e[k] for k in sorted(e)], rel=1e-5), f"step {step}"
    ours = [json.loads((d / "checkpoint-6" / "dler_state.json").read_text()) for d in (uninterrupted, tmp_path)]
    assert ours[0] == ours[1] and ours[0]["penalty"]["stage"] == 1  # stream position, penalty stage, counters
