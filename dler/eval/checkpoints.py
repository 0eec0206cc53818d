"""`dler eval --model RUN_DIR --checkpoints all|N,N,...`: evaluate every checkpoint of a training run with the same
settings, oldest first, each into its own run folder, so that `dler report` can draw accuracy and length against
training step (`dler.eval.curves`).

Layout of the output directory:

    checkpoints.json          the sweep: the training run, the settings every checkpoint is evaluated with
    step-000200/              one ordinary `dler eval` run folder per checkpoint (zero-padded: folders, tables and
      dler_checkpoint.json    legends list the steps in order), plus its step, the model evaluated and whether done
      results.json ...

Each checkpoint is evaluated with its own `dler_prompt.json` (training writes it into every checkpoint). A rerun
skips the finished checkpoints, resumes a partial one through `dler eval`'s own resume, and adds new ones; settings
other than those recorded are refused before anything is loaded. The final model in RUN_DIR is evaluated as the
step it finished at, unless a checkpoint of that step (the same weights) is there. Step 0 is the model the run
started from (`model_name_or_path` in dler_run.json), evaluated with the prompt the run trained with: curves start
where training did (`--checkpoints all` includes it when the run recorded it).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dler.eval.errors import EvalSettingsError
from dler.eval.settings import EvalConfig
from dler.eval.store import RESULTS_FILE, write_json

logger = logging.getLogger(__name__)

SWEEP_FILE = "checkpoints.json"
STEP_FILE = "dler_checkpoint.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# EvalConfig fields that decide the numbers: a rerun of a sweep must keep them (the prompt flags as given: each
# checkpoint resolves its own dler_prompt.json)
SWEEP_KEYS = (
    "benchmarks", "n", "temperatures", "top_p", "max_tokens", "backend", "seed", "data_dir", "limit", "chunk_size",
    "prompt_format", "prompt_template", "system_prompt", "chat_template", "chat_template_kwargs", "answer_region",
    "dtype", "grader", "seed_per_request", "reproducible",
)  # fmt: skip


@dataclass(frozen=True)
class Checkpoint:
    """One model of a training run to evaluate: its training step, its folder, and whether it is the final model
    saved in the run folder itself rather than a checkpoint-N folder."""

    step: int
    path: Path | str  # the starting model (step 0) may be a hub id
    final: bool = False
    start: bool = False

    @property
    def folder(self) -> str:
        """Its run folder's name in the sweep: zero-padded so that names sort by step."""
        return step_folder(self.step)


def step_folder(step: int) -> str:
    return f"step-{step:06d}"


def parse_selection(text: str) -> list[int] | None:
    """`--checkpoints`: "all" (None) or comma-separated training steps."""
    if text.strip() == "all":
        return None
    try:
        steps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--checkpoints takes 'all' or training steps separated by commas, e.g. 200,400; got {text!r}"
        ) from None
    if not steps or any(s < 0 for s in steps):
        raise ValueError(
            f"--checkpoints takes 'all' or training steps >= 0 separated by commas; got {text!r}"
        ) from None
    return sorted(set(steps))


def has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES)


def final_step(run_dir: Path) -> int | None:
    """The step the model saved in `run_dir` was trained to: dler_run.json's, else trainer_state.json's."""
    for name, key in (("dler_run.json", "step"), ("trainer_state.json", "global_step")):
        try:
            value = json.loads((run_dir / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int):
            return value
    return None


def run_record(run_dir: Path) -> dict[str, Any]:
    """The settings dler_run.json recorded for the run (empty when there is none)."""
    try:
        return json.loads((run_dir / "dler_run.json").read_text()).get("settings") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def start_model(run_dir: Path) -> Checkpoint | None:
    """Step 0: the model the run started from, as dler_run.json recorded it (None when it did not)."""
    model = run_record(run_dir).get("model_name_or_path")
    if not model:
        return None
    local = Path(model).expanduser()
    return Checkpoint(0, local if local.exists() else model, start=True)


def start_prompt(config: EvalConfig, run_dir: Path) -> EvalConfig:
    """`config` for the starting model: the run's recorded prompt where no prompt flag was given (the starting model's
    folder has no dler_prompt.json, and the curve must not change prompt at step 0)."""
    from dler.prompts import from_settings

    recorded = run_record(run_dir).get("prompt")
    if not recorded or config.prompt_format is not None:
        return config
    fmt = from_settings(recorded, str(run_dir / "dler_run.json"))
    given = {k: getattr(config, k) for k in ("prompt_template", "system_prompt", "chat_template",
                                              "chat_template_kwargs", "answer_region")}  # fmt: skip
    own = {"prompt_template": fmt.user, "system_prompt": fmt.system or "", "chat_template": fmt.chat_template,
           "chat_template_kwargs": dict(fmt.chat_template_kwargs), "answer_region": fmt.answer_region}  # fmt: skip
    return replace(config, prompt_format=fmt.name, **{k: own[k] if v is None else v for k, v in given.items()})


def _weights_problem(folder: Path | str) -> str | None:
    """Why `folder` cannot be evaluated as a model (None: it can; a hub id is checked by `dler eval` itself)."""
    from dler.runs import MANIFEST, checkpoint_problem

    if not isinstance(folder, Path):
        return None

    if (folder / "adapter_config.json").is_file() and not has_weights(folder):
        return "holds a LoRA adapter, not a model: merge it into its base model first (PEFT's merge_and_unload)"
    if not has_weights(folder):
        return f"holds no model weights ({', '.join(WEIGHT_FILES[::2])}): the save did not write the model"
    if not (folder / "config.json").is_file():
        return "has no config.json"
    if (folder / MANIFEST).is_file() or (folder.parent / "dler_run.json").is_file():
        return checkpoint_problem(str(folder))  # a dler run marks each whole checkpoint
    return None


def find_checkpoints(run_dir: str | Path, selection: list[int] | None = None) -> list[Checkpoint]:
    """The checkpoints of the training run in `run_dir`, oldest first: every checkpoint-N folder, plus the final
    model saved in `run_dir` at a step no checkpoint has; `selection`: only these steps (each must exist). Raises
    EvalSettingsError naming the folder and the fix when one is missing or cannot be evaluated."""
    run = Path(run_dir)
    if not run.is_dir():
        raise EvalSettingsError(f"--model {run}: no such folder (--checkpoints takes a training run's output_dir)")
    found = {int(m.group(1)): Checkpoint(int(m.group(1)), c) for c in run.iterdir()
             if (m := _CHECKPOINT.match(c.name)) and c.is_dir()}  # fmt: skip
    step = final_step(run)
    if has_weights(run) and step is not None and step not in found:
        found[step] = Checkpoint(step, run, final=True)
    elif has_weights(run) and step is None:
        logger.warning(
            "%s holds a model but neither dler_run.json nor trainer_state.json gives its step: left out", run
        )
    start = start_model(run)
    if found and start is not None and (selection is None or 0 in selection):
        found[0] = start
    if not found:
        raise EvalSettingsError(
            f"--checkpoints: {run} holds no checkpoint-N folders (nor a final model with trainer_state.json); "
            "train with --save_steps N, or evaluate a single model without --checkpoints"
        )
    if selection is not None:
        missing = [s for s in selection if s not in found]
        if missing:
            raise EvalSettingsError(
                f"--checkpoints: {run} has no checkpoint of step {', '.join(map(str, missing))}; its steps: "
                f"{', '.join(map(str, sorted(found)))}"
            )
        found = {s: found[s] for s in selection}
    for c in found.values():
        problem = _weights_problem(c.path)
        if problem:
            raise EvalSettingsError(
                f"--checkpoints: {c.path} {problem}; leave it out with --checkpoints "
                f"{','.join(str(s) for s in sorted(found) if s != c.step) or 'N'}"
            )
    return [found[s] for s in sorted(found)]


def sweep_settings(config: EvalConfig, resolved: EvalConfig) -> dict[str, Any]:
    """What a rerun must keep: the prompt flags as given, every other number-deciding setting as resolved."""
    given = ("prompt_format", "prompt_template", "system_prompt", "chat_template", "chat_template_kwargs",
             "answer_region")  # fmt: skip
    return json.loads(json.dumps({k: getattr(config if k in given else resolved, k) for k in SWEEP_KEYS}, default=str))


def _check_sweep(out: Path, run_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse a rerun into `out` with other settings or another training run (naming what differs)."""
    path = out / SWEEP_FILE
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError as exc:
        raise EvalSettingsError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    before = old.get("settings") or {}
    changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v]
    if Path(old.get("run_dir", "")).resolve() != run_dir.resolve():
        changed.insert(0, f"training run: {old.get('run_dir')} -> {run_dir}")
    if changed:
        raise EvalSettingsError(
            f"--output-dir {out} holds a checkpoint sweep made with other settings ({'; '.join(changed)}); "
            "use another --output-dir, or the settings it was made with"
        )


def _is_finished(out: Path, c: Checkpoint, config: EvalConfig) -> bool:
    """Whether the checkpoint's run folder says it finished, and every results.json it needs is there."""
    folder = out / c.folder
    try:
        done = json.loads((folder / STEP_FILE).read_text()).get("finished") is True
    except (OSError, ValueError, AttributeError):
        return False
    return done and all((d / RESULTS_FILE).is_file() for _, d in replace(config, output_dir=str(folder)).run_dirs())


def plan_sweep(config: EvalConfig, selection: list[int] | None) -> list[tuple[Checkpoint, EvalConfig]]:
    """Every check before anything is written or loaded: the checkpoints, each one's settings (its own prompt), a
    rerun's settings against the sweep's. Returns (checkpoint, its config) oldest first."""
    if config.parallel_k is not None:
        raise EvalSettingsError(
            "--checkpoints evaluates pass@1 and length per checkpoint; --parallel-k (test-time scaling) is not "
            "swept over checkpoints: run it on one checkpoint"
        )
    if len(config.temperatures) != 1:
        raise EvalSettingsError(
            "--checkpoints draws curves at one temperature: run one sweep per temperature, each into its own "
            f"--output-dir (got --temperature {','.join(f'{t:g}' for t in config.temperatures)})"
        )
    run, out = Path(config.model), Path(config.output_dir)
    checkpoints = find_checkpoints(run, selection)
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise EvalSettingsError(f"--output-dir {out} is inside the training run {run}: give a folder outside it")
    plans = []
    for c in checkpoints:
        one = replace(start_prompt(config, run) if c.start else config, model=str(c.path),
                      output_dir=str(out / c.folder))  # fmt: skip
        try:
            plans.append((c, one.validate()))
        except ValueError as exc:  # a bad setting, or a checkpoint's own dler_prompt.json
            raise EvalSettingsError(str(exc)) from None
    _check_sweep(out, run, sweep_settings(config, plans[0][1]))
    return plans


def evaluate_checkpoints(config: EvalConfig, selection: list[int] | None = None, **kwargs) -> dict[int, dict]:
    """Evaluate the checkpoints of the training run `config.model` into `config.output_dir`, oldest first; returns
    {step: {run folder: results}} for those evaluated now (finished ones are skipped). `kwargs` go to `evaluate`
    (a backend or grader shared by tests)."""
    from dler.eval.run import evaluate

    plans = plan_sweep(config, selection)
    out, run = Path(config.output_dir), Path(config.model)
    out.mkdir(parents=True, exist_ok=True)
    sweep = {"run_dir": str(run), "settings": sweep_settings(config, plans[0][1])}
    old = json.loads((out / SWEEP_FILE).read_text()) if (out / SWEEP_FILE).is_file() else {}
    write_json(out / SWEEP_FILE, {**sweep, "steps": sorted({*old.get("steps", []), *(c.step for c, _ in plans)})})
    results: dict[int, dict] = {}
    for c, one in plans:
        if _is_finished(out, c, one):
            logger.info("step %d: finished before (%s), skipped", c.step, out / c.folder)
            continue
        folder = out / c.folder
        folder.mkdir(parents=True, exist_ok=True)
        record = {"step": c.step, "model": str(c.path), "final": c.final, "start": c.start, "run_dir": str(run)}
        write_json(folder / STEP_FILE, {**record, "finished": False})
        logger.info("step %d: evaluating %s into %s", c.step, c.path, folder)
        results[c.step] = evaluate(one, **kwargs)
        write_json(folder / STEP_FILE, {**record, "finished": True})
    return results


def read_step(folder: Path) -> int | None:
    """The training step of a sweep's run folder (or of a temperature folder inside it), None if not a sweep's."""
    for f in (folder / STEP_FILE, folder.parent / STEP_FILE):
        try:
            step = json.loads(f.read_text()).get("step")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None
