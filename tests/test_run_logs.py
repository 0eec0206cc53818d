"""Where a run's metrics land: the `--report_to` check, metrics.jsonl, and the final trainer_state.json."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import TrainerControl, TrainerState
from transformers.integrations import integration_utils

from dler.run_logs import METRICS_FILE, MetricsLog, check_report_to, finish_run, use_progress_bar


def unavailable(monkeypatch, *helpers):
    for helper in helpers:
        monkeypatch.setattr(integration_utils, helper, lambda: False)


# check_report_to


@pytest.mark.parametrize("report_to", ["tensorboard", ["tensorboard"], ["wandb", "tensorboard"]])
def test_missing_tensorboard_names_the_extra(monkeypatch, report_to):
    unavailable(monkeypatch, "is_tensorboard_available")
    with pytest.raises(ValueError, match=r'tensorboard: pip install "dler\[tensorboard\]"'):
        check_report_to(report_to)


def test_every_missing_integration_is_named_with_its_command(monkeypatch):
    unavailable(monkeypatch, "is_tensorboard_available", "is_wandb_available", "is_comet_available")
    with pytest.raises(ValueError) as error:
        check_report_to(["wandb", "tensorboard", "comet_ml"])
    message = str(error.value)
    assert "wandb: pip install wandb" in message
    assert 'tensorboard: pip install "dler[tensorboard]"' in message
    assert f'comet_ml: pip install "comet-ml>={integration_utils._MIN_COMET_VERSION}"' in message


@pytest.mark.parametrize("report_to", [None, "none", ["none"], [], "all", ["all"]])
def test_nothing_to_check(monkeypatch, report_to):
    unavailable(monkeypatch, *(name for name in dir(integration_utils) if name.startswith("is_")))
    check_report_to(report_to)  # "all" means the installed ones: nothing can be missing


def test_installed_integrations_pass(monkeypatch):
    monkeypatch.setattr(integration_utils, "is_tensorboard_available", lambda: True)
    monkeypatch.setattr(integration_utils, "is_wandb_available", lambda: True)
    check_report_to(["tensorboard", "wandb"])


def test_unknown_integration():
    with pytest.raises(ValueError, match="tensorbored: not an integration transformers knows.*tensorboard"):
        check_report_to("tensorbored")


def test_every_transformers_integration_is_covered():
    from dler.run_logs import _INTEGRATIONS

    assert set(_INTEGRATIONS) == set(integration_utils.INTEGRATION_TO_CALLBACK)
    for helpers, _ in _INTEGRATIONS.values():
        assert all(callable(getattr(integration_utils, helper)) for helper in helpers)


# MetricsLog


def fake_run(output_dir, step, main=True):
    state = TrainerState()
    state.global_step = step
    state.is_world_process_zero = main
    return SimpleNamespace(output_dir=str(output_dir)), state, TrainerControl()


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_log_writes_one_line_per_log(tmp_path):
    callback = MetricsLog()
    for step, loss in [(1, 0.5), (2, 0.25)]:
        args, state, control = fake_run(tmp_path / "out", step)
        callback.on_log(args, state, control, logs={"loss": loss, "reward": 1.0})
    assert read_lines(tmp_path / "out" / METRICS_FILE) == [
        {"step": 1, "loss": 0.5, "reward": 1.0},
        {"step": 2, "loss": 0.25, "reward": 1.0},
    ]


def test_metrics_log_appends_on_resume(tmp_path):
    args, state, control = fake_run(tmp_path, 2)
    MetricsLog().on_log(args, state, control, logs={"loss": 0.5})
    args, state, control = fake_run(tmp_path, 3)  # a second run (resumed) in the same output_dir
    MetricsLog().on_log(args, state, control, logs={"loss": 0.4})
    assert [line["step"] for line in read_lines(tmp_path / METRICS_FILE)] == [2, 3]


def test_metrics_log_only_on_the_main_process(tmp_path):
    args, state, control = fake_run(tmp_path, 1, main=False)
    MetricsLog().on_log(args, state, control, logs={"loss": 0.5})
    assert not (tmp_path / METRICS_FILE).exists()


def test_metrics_log_values_strict_json_cannot_hold_become_strings(tmp_path):
    args, state, control = fake_run(tmp_path, 1)
    logs = {
        "nan": math.nan,
        "inf": math.inf,
        "tensor": torch.tensor(0.5),
        "numpy": np.float32(0.25),
        "count": np.int64(3),
        "none": None,
        "object": object,
        "vector": torch.tensor([1.0, 2.0]),
    }
    MetricsLog(tmp_path / "custom.jsonl").on_log(args, state, control, logs=logs)
    (line,) = read_lines(tmp_path / "custom.jsonl")  # json.loads would also take NaN; check strictness below
    assert line["nan"] == "nan" and line["inf"] == "inf"
    assert line["tensor"] == 0.5 and line["numpy"] == 0.25 and line["count"] == 3 and line["none"] is None
    assert line["object"] == str(object) and line["vector"] == str(torch.tensor([1.0, 2.0]))
    json.loads((tmp_path / "custom.jsonl").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))


# finish_run


class FakeTrainer:
    def __init__(self, output_dir, main=True):
        self.args = SimpleNamespace(output_dir=str(output_dir))
        self.state = TrainerState(global_step=4, max_steps=4, log_history=[{"loss": 0.5, "step": 4}])
        self.main = main

    def is_world_process_zero(self):
        return self.main


def test_finish_run_writes_trainer_state(tmp_path):
    finish_run(FakeTrainer(tmp_path / "out"))
    state = TrainerState.load_from_json(str(tmp_path / "out" / "trainer_state.json"))
    assert state.global_step == 4 and state.log_history == [{"loss": 0.5, "step": 4}]


def test_finish_run_only_on_the_main_process(tmp_path):
    finish_run(FakeTrainer(tmp_path, main=False))
    assert not (tmp_path / "trainer_state.json").exists()


@pytest.mark.slow
def test_a_tiny_run_leaves_metrics_and_state_in_output_dir(tmp_path, tiny_model_dir):
    from helpers import addition_dataset, even_length, tiny_config

    from dler import DLERTrainer

    trainer = DLERTrainer(
        model=tiny_model_dir,
        reward_funcs=even_length,
        args=tiny_config(tmp_path, max_steps=2),
        train_dataset=addition_dataset(),
        callbacks=[MetricsLog()],
    )
    trainer.train()
    finish_run(trainer)
    lines = read_lines(tmp_path / METRICS_FILE)
    assert [line["step"] for line in lines] == [1, 2, 2]  # two logging steps, then the train summary
    assert isinstance(lines[0]["reward"], float) and "train_runtime" in lines[-1]
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and len(state["log_history"]) == 3


# use_progress_bar


@pytest.mark.parametrize("default", ["ProgressCallback", "PrinterCallback"])
def test_use_progress_bar_leaves_exactly_the_callers_bar(default):
    from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback, PrinterCallback, ProgressCallback

    handler = CallbackHandler(
        [DefaultFlowCallback, {"ProgressCallback": ProgressCallback, "PrinterCallback": PrinterCallback}[default]],
        None,
        None,
        None,
        None,
    )
    trainer = SimpleNamespace(remove_callback=handler.remove_callback, add_callback=handler.add_callback)

    class Bar(ProgressCallback):
        pass

    bar = Bar()
    use_progress_bar(trainer, bar)
    assert [type(c) for c in handler.callbacks] == [DefaultFlowCallback, Bar] and handler.callbacks[1] is bar
