"""A resume as a new user meets it (issue 24): `metrics.jsonl` holds each step once with the resume marked, and a
tied-weights model resumes without a `missing keys ['lm_head.weight']` warning."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import addition_dataset, always_correct, recipe_args, tiny_config
from safetensors.torch import load_file, save_file
from test_run_logs import fake_run, read_lines  # MetricsLog's fakes, written once

from dler.run_logs import METRICS_FILE, MetricsLog, resumed_lines
from dler.trainer import tied_missing_keys

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "recipes" / "dler_tiny.py")


# ---------------------------------------------------------------- metrics.jsonl
def test_resumed_lines_keep_the_steps_up_to_the_checkpoint():
    lines = [
        '{"step": 1, "loss": 1}',
        '{"event": "resume", "from_step": 1, "checkpoint": null, "dropped_lines": 0}',
        '{"step": 2, "loss": 2}',
        '{"event": "resume", "from_step": 2, "checkpoint": null, "dropped_lines": 3}',  # its run was lost too
        '{"step": 3, "loss": 3}',
        '{"step": 3, "train_runtime": 9.0}',
        '{"step": 4, "lo',  # cut short by the kill
    ]
    assert resumed_lines(lines, 2) == (lines[:3], 4)
    assert resumed_lines(lines, 3) == (lines[:6], 1)
    assert resumed_lines([], 5) == ([], 0)


def test_a_resumed_run_drops_the_lost_steps_and_marks_the_resume(tmp_path):
    for step in (1, 2, 3, 4):  # the killed run wrote steps 3 and 4 after its last checkpoint (step 2)
        MetricsLog().on_log(*fake_run(tmp_path, step), logs={"loss": step / 10})
    callback = MetricsLog(checkpoint=str(tmp_path / "checkpoint-2"))
    callback.on_train_begin(*fake_run(tmp_path, 2))  # the restart: training begins at the checkpoint's step
    for step in (3, 4):
        callback.on_log(*fake_run(tmp_path, step), logs={"loss": step / 100})
    marker = {"event": "resume", "from_step": 2, "checkpoint": str(tmp_path / "checkpoint-2"), "dropped_lines": 2}
    assert read_lines(tmp_path / METRICS_FILE) == [
        {"step": 1, "loss": 0.1},
        {"step": 2, "loss": 0.2},
        marker,
        {"step": 3, "loss": 0.03},
        {"step": 4, "loss": 0.04},
    ]


def test_a_fresh_run_and_other_ranks_leave_the_file_alone(tmp_path):
    MetricsLog().on_log(*fake_run(tmp_path, 3), logs={"loss": 0.5})
    before = (tmp_path / METRICS_FILE).read_text()
    MetricsLog().on_train_begin(*fake_run(tmp_path, 0))  # step 0: not a resume
    MetricsLog().on_train_begin(*fake_run(tmp_path, 1, main=False))  # only the main process writes
    assert (tmp_path / METRICS_FILE).read_text() == before
    MetricsLog().on_train_begin(*fake_run(tmp_path / "new", 1))  # resumed with no file yet: just the marker
    assert read_lines(tmp_path / "new" / METRICS_FILE) == [
        {"event": "resume", "from_step": 1, "checkpoint": None, "dropped_lines": 0}
    ]


# ---------------------------------------------------------------- tied weights
def tiny_model():
    from dler.demo.tiny import build_tiny_model, build_tiny_tokenizer

    return build_tiny_model(build_tiny_tokenizer(vocab_size=64), hidden_size=8, num_layers=1)


def test_only_tied_keys_count_as_loaded():
    model = tiny_model()
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert tied_missing_keys(model, ["lm_head.weight"]) == {"lm_head.weight"}
    assert tied_missing_keys(model, ["module.lm_head.weight"]) == {"module.lm_head.weight"}  # a wrapped model
    assert tied_missing_keys(model, ["lm_head.weight", "model.norm.weight"]) == {"lm_head.weight"}
    # both halves of the tie missing: nothing loaded them
    assert tied_missing_keys(model, ["lm_head.weight", "model.embed_tokens.weight"]) == set()


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_resuming_a_tied_model_warns_only_of_keys_really_missing(tiny_model_dir, tmp_path):
    from dler import DLERTrainer

    trainer = DLERTrainer(
        model=tiny_model_dir,
        reward_funcs=always_correct,
        args=tiny_config(tmp_path / "out"),
        train_dataset=addition_dataset(8),
    )
    trainer.save_model(str(tmp_path / "ckpt"))  # as a checkpoint holds it: lm_head.weight is not written
    weights = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert "lm_head.weight" not in weights
    records, log = Records(), logging.getLogger("transformers.trainer")
    log.addHandler(records)
    try:
        trainer._load_from_checkpoint(str(tmp_path / "ckpt"))
        assert not [m for m in records.messages if "missing keys" in m]
        del weights["model.norm.weight"]  # a key really missing still warns, without the tied one
        save_file(weights, str(tmp_path / "ckpt" / "model.safetensors"), metadata={"format": "pt"})
        trainer._load_from_checkpoint(str(tmp_path / "ckpt"))
    finally:
        log.removeHandler(records)
    assert [m for m in records.messages if "missing keys" in m] == [
        "There were missing keys in the checkpoint model loaded: ['model.norm.weight']."
    ]


# ---------------------------------------------------------------- through the recipe
@pytest.mark.slow
def test_a_restart_after_a_lost_step_writes_each_step_once_and_warns_of_nothing_missing(tiny_model_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{a} + {a}?", "answer": str(2 * a)}) + "\n" for a in range(8)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def recipe(max_steps):
        argv = recipe_args(
            tiny_model_dir, data, tmp_path / "out", use_cpu="true", bf16="false", dynamic_sampling="false",
            max_steps=max_steps, save_strategy="steps", save_steps=1, logging_steps=1,
        )  # fmt: skip
        proc = subprocess.run([sys.executable, TINY, *argv], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stdout + proc.stderr

    recipe(2)
    out = tmp_path / "out"
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"truncated")  # step 2 was lost with its checkpoint
    log = recipe(3)
    assert f"Resuming from {out / 'checkpoint-1'} at step 1 of 3" in log
    assert "missing keys" not in log
    lines = read_lines(out / METRICS_FILE)
    marker = [i for i, line in enumerate(lines) if line.get("event") == "resume"]
    assert len(marker) == 1 and lines[marker[0]]["from_step"] == 1
    assert lines[marker[0]]["checkpoint"] == str(out / "checkpoint-1") and lines[marker[0]]["dropped_lines"] >= 1
    assert {line["step"] for line in lines[: marker[0]]} == {1}
    train_steps = [line["step"] for line in lines if "loss" in line]
    assert train_steps == [1, 2, 3]
