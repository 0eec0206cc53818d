"""A new user's first commands (issue 24, recipe command line): a short `--help` that builds nothing, "did you mean"
for a misspelled flag or YAML key, nothing left behind by a run that fails before training, a short console line
per step, and `dler solve-rate`'s summary and help."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import recipe_args

from dler.run_console import console_line

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "recipes" / "dler_tiny.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def command(*argv, cwd):
    """A command as a user types it, in `cwd`; returns the finished process."""
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def problems(path, n=8):
    path.write_text("".join(json.dumps({"problem": f"{a} + {a}?", "answer": str(2 * a)}) + "\n" for a in range(n)))
    return path


# ---------------------------------------------------------------- pure parts
def test_console_line_shows_the_watched_metrics_by_hand():
    logs = {
        "loss": 0.012344,
        "reward": 0.5,
        "dler/correctness": 0.625,
        "completions/mean_length": 11.125,
        "dler/over_budget_frac": 0.125,
        "dynamic_sampling/rounds": 2.0,
        "completions/min_length": 1.0,  # not watched: metrics.jsonl only
        "entropy": 5.99,
    }
    assert console_line(3, 10, logs) == (
        "step 3/10: loss 0.01234, reward 0.5, correct 62.5%, length 11.1, over budget 12.5%, rounds 2"
    )
    assert console_line(4, 10, {"loss": 0.0, "kl": 0.0}) == "step 4/10: loss 0"
    assert console_line(5, 10, {"eval_reward": 0.25, "eval_dler/correctness": 0.5, "eval_loss": 1.0}) == (
        "step 5/10 eval: loss 1, reward 0.25, correct 50.0%"
    )
    assert console_line(10, 10, {"train_runtime": 12.34, "train_loss": 0.1}) == "step 10/10: training done in 12.3 s"


# ---------------------------------------------------------------- through the command line
@pytest.mark.slow
def test_help_builds_nothing_is_short_and_help_all_lists_trls_settings(tmp_path):
    proc = command(TINY, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "runs").exists(), "--help built the tiny model"
    text = proc.stdout
    assert len(text.splitlines()) < 400
    assert "\n  --truncation_length" in text and "\n  --model_name_or_path" in text  # dler's, then the essentials
    assert "\n  --logging_first_step" not in text and "`--help-all` lists them" in text
    assert "--dataset-name" not in text  # one spelling per flag
    proc = command(TINY, "--help-all", cwd=tmp_path)
    assert proc.returncode == 0 and "\n  --logging_first_step" in proc.stdout
    proc = command(TINY, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["model"]["model_name_or_path"] == "runs/tiny/model"
    assert not (tmp_path / "runs").exists(), "--dry-run built the tiny model"


@pytest.mark.slow
def test_misspelled_flag_and_yaml_key_say_did_you_mean(tmp_path):
    proc = command(TINY, "--dry-run", "--truncaton_length", "8", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown setting --truncaton_length (did you mean --truncation_length?)" in proc.stderr
    (tmp_path / "run.yaml").write_text("learning_rate: 1.0e-5\nmax_setps: 10\n")
    proc = command(TINY, "--dry-run", "--config", "run.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = "run.yaml: unknown setting 'max_setps' (did you mean max_steps?); fix or remove the key"
    assert line in proc.stderr and "fail_with_unknown_args" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2  # the line, and where the traceback is


@pytest.mark.slow
def test_a_run_that_stops_on_bad_data_leaves_nothing_behind(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"problem": f"{a} + 1", "answer": "\\frac{"}) + "\n" for a in range(6)))
    output_dir = tmp_path / "new" / "out"  # both folders made by the run
    argv = recipe_args(tiny_model_dir, bad, output_dir, use_cpu="true", bf16="false", dynamic_sampling="false")
    proc = command(TINY, *argv, cwd=tmp_path)
    assert proc.returncode == 2 and "usable problem" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays, empty as it was
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    argv = recipe_args(tiny_model_dir, bad, tmp_path / "mine", use_cpu="true", bf16="false", dynamic_sampling="false")
    proc = command(TINY, *argv, cwd=tmp_path)
    assert proc.returncode == 2
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_run_prints_one_short_line_per_step_and_keeps_every_metric_in_the_file(tiny_model_dir, tmp_path):
    argv = recipe_args(
        tiny_model_dir, problems(tmp_path / "train.jsonl"), tmp_path / "out", use_cpu="true", bf16="false",
        dynamic_sampling="false", max_steps=2, logging_steps=1, gradient_checkpointing="false",
    )  # fmt: skip
    proc = command(TINY, *argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "step 1/2: loss " in console and ", length " in console and ", over budget " in console
    assert "completions/min_length" not in console and "{'loss'" not in console
    assert "gradient_checkpointing` is deprecated" not in console
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert "completions/min_length" in lines[0] and "dler/over_budget_frac" in lines[0]


@pytest.mark.slow
def test_solve_rate_prints_its_summary_and_documents_its_sampling_flags(tiny_model_dir, tmp_path):
    proc = command("-m", "dler", "solve-rate", "--help", cwd=tmp_path)
    flat = " ".join(proc.stdout.split())
    for text in ("sampling temperature (default: 0.6)", "(default: 0.95)", "(default: 8192)"):
        assert text in flat
    data = problems(tmp_path / "train.jsonl", n=2)
    proc = command(
        "-m", "dler", "solve-rate", "--model", tiny_model_dir, "--data", str(data), "--output", "rates.jsonl",
        "--n", "2", "--max-tokens", "8", "--backend", "transformers", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "solve rates of 2 problems:" in proc.stdout and "written to rates.jsonl" in proc.stdout
    assert "solve rates of" not in proc.stderr  # not a WARNING log line
    assert len((tmp_path / "rates.jsonl").read_text().splitlines()) == 2
