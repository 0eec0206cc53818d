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
COMPARED = (
    "loss",
    "dler/shaped_reward",
    "dler/correctness",
    "dynamic_sampling/rounds",
    "dler/budget_mean",
    "dynamic_sampling/carried_groups",
    "dynamic_sampling/first_round_prompts",
    "dynamic_sampling/prompts_skipped",
)


def train(model_dir, output_dir, kill_at=None, mode=""):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DLER_RESUME_MODE": mode, **({"KILL_AT": kill_at} if kill_at else {})}
    env.pop("KILL_AT", None) if not kill_at else None
    return subprocess.run(
        [sys.executable, str(SCRIPT), model_dir, str(output_dir)], env=env, capture_output=True, text=True, timeout=300
    )


def history(output_dir, last=6):
    state = json.loads((Path(output_dir) / f"checkpoint-{last}" / "trainer_state.json").read_text())
    return [{k: h[k] for k in COMPARED if k in h} for h in state["log_history"] if "loss" in h]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = train(tiny_model_dir, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("kill_at", ["generation", "optimizer"])
def test_sigkill_then_restart_matches_the_uninterrupted_run(kill_at, uninterrupted, tiny_model_dir, tmp_path):
    kill_and_resume(tiny_model_dir, tmp_path, kill_at)
    assert_same_run(uninterrupted, tmp_path)


def test_generating_less_resumes_exactly_after_sigkill(tiny_model_dir, tmp_path):
    """Carried rows (per-rank file), skip history and kept fraction come back: the run ends as if never killed."""
    uninterrupted = tmp_path / "uninterrupted"
    assert train(tiny_model_dir, uninterrupted, mode="generating_less").returncode == 0
    carry = torch.load(uninterrupted / "checkpoint-4" / "dler_rank0.pt", weights_only=True)["carry"]
    assert carry, "the checkpoint the run resumes from should hold carried groups"
    kill_and_resume(tiny_model_dir, tmp_path / "killed", "generation", mode="generating_less", saved=4)
    assert_same_run(uninterrupted, tmp_path / "killed", last=8)
    assert sum(h.get("dynamic_sampling/carried_groups", 0) for h in history(uninterrupted, last=8)) > 0


def kill_and_resume(model_dir, output_dir, kill_at, mode="", saved=2):
    killed = train(model_dir, output_dir, kill_at=kill_at, mode=mode)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (output_dir / f"checkpoint-{saved}").is_dir() and not (output_dir / f"checkpoint-{2 * saved}").exists()
    resumed = train(model_dir, output_dir, mode=mode)  # the same command again, as a requeued job runs it
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def assert_same_run(uninterrupted, tmp_path, last=6):
    expected, got = (
        load_file(uninterrupted / "final" / "model.safetensors"),
        load_file(tmp_path / "final" / "model.safetensors"),
    )
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6, msg=f"parameter {name} differs")
    got_history, expected_history = history(tmp_path, last), history(uninterrupted, last)
    assert [sorted(h) for h in got_history] == [sorted(h) for h in expected_history]
    for step, (g, e) in enumerate(zip(got_history, expected_history, strict=True), 1):
        assert [g[k] for k in sorted(g)] == pytest.approx([e[k] for k in sorted(e)], rel=1e-5), f"step {step}"
    ours = [json.loads((d / f"checkpoint-{last}" / "dler_state.json").read_text()) for d in (uninterrupted, tmp_path)]
    assert ours[0] == ours[1]  # stream position, counters
    ranks = [
        torch.load(d / f"checkpoint-{last}" / "dler_rank0.pt", weights_only=True) for d in (uninterrupted, tmp_path)
    ]
    assert repr(ranks[0]) == repr(ranks[1]) and ranks[0]["penalty"]["stage"] == 1  # penalty stage, carried groups
