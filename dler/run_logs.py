"""Where a run's metrics land: a check of `--report_to` before the model loads, a JSON-lines metrics log, and the
final `trainer_state.json`.

- `check_report_to(report_to)`: every integration named in `report_to` must be installed, or the run stops before the
  model loads, saying what to install (`pip install "dler[tensorboard]"` for TensorBoard).
- `MetricsLog`: a callback that appends each logged dict, as `{"step": global_step, **logs}`, to
  `<output_dir>/metrics.jsonl` on the main process; a resumed run first drops the lines the lost run wrote after the
  checkpoint, then appends a `{"event": "resume", ...}` line and its own steps to the same file.
- `finish_run(trainer)`: writes `trainer_state.json` (with the whole `log_history`) into `output_dir` once training
  ends; the Trainer itself only writes it inside checkpoints.
- `use_progress_bar(trainer, callback)`: swaps the Trainer's default progress bar (or log printer) for `callback`.
- `name_base_model(output_dir, base_model)`: names the base model in the model card TRL writes, where TRL left it out.
"""

from __future__ import annotations

import json
import math
import os

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

METRICS_FILE = "metrics.jsonl"
TRAINER_STATE_FILE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME
MODEL_CARD_FILE = "README.md"  # TRL's create_model_card writes it into output_dir
_NO_BASE = "[None](https://huggingface.co/None)"  # TRL's card template when it has no Hub id for the base model
_NO_HUB_ID = 'model="None"'  # its quick-start snippet when the run has no hub_model_id

# integration -> (the transformers.integrations.integration_utils helper(s) that must all say yes, what to do if not)
_INTEGRATIONS = {
    "tensorboard": (("is_tensorboard_available",), 'pip install "dler[tensorboard]"'),
    "wandb": (("is_wandb_available",), "pip install wandb"),
    "trackio": (("is_trackio_available",), "pip install trackio"),
    "comet_ml": (("is_comet_available",), 'pip install "comet-ml>={min_comet}"'),
    "mlflow": (("is_mlflow_available",), "pip install mlflow (and leave DISABLE_MLFLOW_INTEGRATION unset)"),
    "azure_ml": (("is_azureml_available",), "pip install azureml-sdk"),
    "neptune": (("is_neptune_available",), "pip install neptune"),
    "codecarbon": (("is_codecarbon_available",), "pip install codecarbon"),
    "clearml": (("is_clearml_available",), "pip install clearml"),
    "dagshub": (("is_dagshub_available",), "pip install dagshub mlflow"),
    "flyte": (("is_flytekit_available",), "pip install flytekit"),
    "dvclive": (("is_dvclive_available",), "pip install dvclive"),
    "swanlab": (("is_swanlab_available",), "pip install swanlab"),
    "kubeflow": (
        ("is_kubeflow_available",),
        "run inside a Kubeflow TrainJob, which sets KUBEFLOW_TRAINER_SERVER_URL (and leave "
        "DISABLE_KUBEFLOW_INTEGRATION unset); there is nothing to pip install",
    ),
}


def _requested(report_to) -> list[str]:
    """The integrations `report_to` names, as `TrainingArguments` reads it: None / "none" -> none; "all" -> only those
    installed (so nothing to check); a str -> that one."""
    if report_to is None:
        return []
    if isinstance(report_to, str):
        report_to = [report_to]
    report_to = list(report_to)
    if report_to in (["none"], ["all"]):
        return []
    return report_to


def check_report_to(report_to) -> None:
    """Raise `ValueError` naming each integration in `report_to` that is unknown or not installed, with what to
    install. Call it before the model loads: transformers only finds out when the Trainer is built."""
    from transformers.integrations import integration_utils

    missing = []
    for name in _requested(report_to):
        if name not in _INTEGRATIONS:
            supported = ", ".join(integration_utils.INTEGRATION_TO_CALLBACK)
            raise ValueError(f"--report_to {name}: not an integration transformers knows (supported: {supported})")
        helpers, install = _INTEGRATIONS[name]
        if not all(getattr(integration_utils, helper)() for helper in helpers):
            min_comet = getattr(integration_utils, "_MIN_COMET_VERSION", "3.43.2")
            missing.append(f"{name}: {install.format(min_comet=min_comet)}")
    if missing:
        raise ValueError(
            "--report_to names integrations that are not installed; install them, or drop them from --report_to:\n  "
            + "\n  ".join(missing)
        )


def _jsonable(value):
    """A value strict JSON can hold: numbers and strings as they are, 0-d tensors and NumPy scalars as numbers,
    NaN / inf and anything else as strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if callable(getattr(value, "item", None)) and getattr(value, "ndim", 0) == 0:  # torch / NumPy scalars
        try:
            number = value.item()
        except (TypeError, ValueError, RuntimeError):
            return str(value)
        if isinstance(number, (bool, int, float)):
            return _jsonable(number)
    return str(value)


def resumed_lines(lines: list[str], from_step: int) -> tuple[list[str], int]:
    """The lines of a metrics file a run resumed at `from_step` keeps, and how many it drops: those of steps after
    `from_step` (the lost run wrote them; the resumed run writes those steps again), earlier resume markers at or
    after `from_step` (their runs were lost too), and lines cut short by a kill."""
    kept = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        position = entry.get("from_step") if entry.get("event") == "resume" else entry.get("step")
        is_marker = entry.get("event") == "resume"
        if isinstance(position, int) and (position < from_step if is_marker else position <= from_step):
            kept.append(line)
    return kept, len(lines) - len(kept)


class MetricsLog(TrainerCallback):
    """Append every `on_log` dict to `<output_dir>/metrics.jsonl` (or `path`), one JSON object a line:
    `{"step": state.global_step, **logs}`, written and flushed by the main process only. A resumed run (training
    begins at a step > 0) keeps the lines up to its checkpoint's step, drops those the lost run wrote after it, and
    appends `{"event": "resume", "from_step": N, "checkpoint": ..., "dropped_lines": k}`: each step appears once, from
    the run the final model continues. Values strict JSON cannot hold become strings.

    `checkpoint`: the folder the run resumes from, named in the marker (None: not known)."""

    def __init__(self, path: str | os.PathLike | None = None, checkpoint: str | None = None):
        self.path = path
        self.checkpoint = checkpoint

    def file(self, args) -> str:
        return os.fspath(self.path) if self.path is not None else os.path.join(args.output_dir, METRICS_FILE)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not state.global_step:
            return
        path = self.file(args)
        lines = []
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        kept, dropped = resumed_lines(lines, state.global_step)
        marker = {"event": "resume", "from_step": state.global_step, "checkpoint": self.checkpoint}
        kept.append(json.dumps({**marker, "dropped_lines": dropped}))
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in kept))
        os.replace(path + ".tmp", path)  # a kill while rewriting leaves the old file whole

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        path = self.file(args)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        line = json.dumps(_jsonable({"step": state.global_step, **logs}), allow_nan=False)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()


def finish_run(trainer) -> None:
    """After training: write `trainer_state.json` (global step, `log_history`, ...) into `trainer.args.output_dir`,
    on the main process only."""
    if not trainer.is_world_process_zero():
        return
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    trainer.state.save_to_json(os.path.join(trainer.args.output_dir, TRAINER_STATE_FILE))


def use_progress_bar(trainer, callback) -> None:
    """Replace the trainer's default progress bar, or its log printer (installed instead when logging is quiet), with
    `callback`, so only one bar is drawn."""
    for default in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(default)
    trainer.add_callback(callback)


def base_model_text(base_model: str) -> str:
    """How a model card names a base model that is not a Hub id: a local folder by its path (no Hub link), followed by
    the Hub model that folder was fine-tuned from when its own card says so."""
    if not base_model:
        return "a model whose name or path was not recorded"
    text = f"the local model `{base_model}`"
    card = os.path.join(base_model, MODEL_CARD_FILE)
    if os.path.isfile(card):
        from huggingface_hub import ModelCard

        parent = ModelCard.load(card).data.base_model
        if isinstance(parent, str) and parent:
            text += f" (itself a fine-tuned version of [{parent}](https://huggingface.co/{parent}))"
    return text


def name_base_model(output_dir: str, base_model: str) -> None:
    """Fill in the model card TRL wrote to `output_dir`. TRL names the base model only when `config._name_or_path` is
    a Hub id (not a local folder) and otherwise writes "fine-tuned version of [None](https://huggingface.co/None)";
    this names `base_model` instead (`base_model_text`), and points the quick-start snippet at `output_dir` when the
    run has no `hub_model_id`. A card that already names its base is left as it is."""
    path = os.path.join(output_dir, MODEL_CARD_FILE)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        text = f.read()
    fixed = text.replace(_NO_BASE, base_model_text(base_model)).replace(
        _NO_HUB_ID, f"model={json.dumps(os.fspath(output_dir))}"
    )
    if fixed != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(fixed)
