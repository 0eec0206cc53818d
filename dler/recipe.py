"""What every training recipe shares: presets, the paper's batch arithmetic, `--dry-run`, and the training run.

A recipe (recipes/*.py) is a dict of defaults handed to `run`. Precedence, lowest first: the recipe's defaults, the
`--preset` (paper | released), a YAML `--config`, the command line. Global batch semantics are the recipe's
(prompts per generation, prompts per optimizer update, rollouts per prompt); the per-device batch, gradient
accumulation and steps per generation are derived from the number of processes, or the run fails saying why.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser, get_peft_config

from dler.config import OPTIMIZER_RECIPES, DLERConfig
from dler.run_logs import MetricsLog, check_report_to, finish_run
from dler.runs import (
    RUN_FILE,
    RunLock,
    find_resume_checkpoint,
    leave_process_group,
    read_run,
    settings_differences,
    write_json_atomically,
)

logger = logging.getLogger(__name__)

TABLE_4 = "paper Table 4"
RELEASED = "released script (NVlabs/DLER dler_slurm.sh on its patched verl)"

# Every value a preset sets, with its source. Both presets fix what TRL 1.16 would otherwise change about the objective
# (importance weights, KL form, prompt length); they differ where the paper and the released run differ.
# docs/fidelity.md is the same table for people.
_SHARED = {
    "vllm_importance_sampling_correction": (
        False,
        "paper and released run: no vLLM importance weights (rollout_is off)",
    ),
    "delta": (10.0, f"{RELEASED}: dual-clip clip_ratio_c=10 (Table 4 is silent)"),
    "use_bias_correction_kl": (False, f"{RELEASED}: plain KL, no ratio factor"),
    "max_prompt_length": (1024, f"{TABLE_4} and {RELEASED}: max_prompt_length 1024, left-truncated"),
    "eval_temperature": (0.6, f"{RELEASED}: validation sampling T=0.6, top_p 1.0"),
    "num_generations_eval": (4, f"{RELEASED}: validation n=4"),
    "eval_every_generations": (5, f"{RELEASED}: validation every 5 generation steps (test_freq=5)"),
}
PRESETS = {
    "paper": {
        **_SHARED,
        "truncated_reward_scale": (0.0, "paper Sec. 3: a response over the budget earns 0"),
        "advantage_weighting": ("sequence", "paper Eq. (batch normalisation): one weight per sequence"),
        "dynamic_sampling_metric": ("reward", f"{TABLE_4}: filter_groups metric seq_reward"),
        "kl_estimator": ("k2", f"{TABLE_4}: kl_loss_type mse"),
        "prompts_per_round": ("generation", "paper: every round is a whole generation batch (512 prompts)"),
        "grader": ("dler", "paper Sec. 4: requires </think>, grades the last \\boxed{} after it"),
    },
    "released": {
        **_SHARED,
        "truncated_reward_scale": (0.1, f"{RELEASED}: stop_properly_penalty.penalty_coef=0.1"),
        "advantage_weighting": ("token", f"{RELEASED}: masked_whiten weights every response token"),
        "dynamic_sampling_metric": ("correctness", f"{RELEASED}: groups filtered on raw correctness"),
        "kl_estimator": ("low_var_kl", f"{RELEASED}: kl_loss_type low_var_kl (k3 clamped to +-10), coef 0.0005"),
        "prompts_per_round": (384, f"{RELEASED}: gen_batch_size=384 prompts per round until 512 groups are kept"),
        "grader": ("released", f"{RELEASED}: its reward function (math-verify OR string OR sympy)"),
    },
    "none": {},  # recipes of other papers, which the DLER paper/released split does not describe
}
# TRL defaults the presets override and the fields that decide the objective: the dry run shows where each came from.
OBJECTIVE = (
    "learning_rate",
    "lr_scheduler_type",
    "weight_decay",
    "max_grad_norm",
    "beta",
    "kl_estimator",
    "use_bias_correction_kl",
    "epsilon",
    "epsilon_high",
    "delta",
    "loss_type",
    "vllm_importance_sampling_correction",
    "num_generations",
    "temperature",
    "top_p",
    "max_prompt_length",
    "max_completion_length",
    "truncation_length",
    "truncated_reward_scale",
    "length_budgets",
    "optimizer_recipe",
    "penalty",
    "penalty_kwargs",
    "advantage_normalization",
    "advantage_weighting",
    "correct_advantage_boost",
    "dynamic_sampling",
    "dynamic_sampling_metric",
    "prompts_per_round",
    "max_sampling_rounds",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "max_steps",
    "eval_strategy",
    "eval_steps",
    "num_generations_eval",
    "eval_temperature",
    "per_device_eval_batch_size",
    "grader",
    "use_vllm",
    "vllm_mode",
    "save_steps",
    "seed",
)


@dataclass
class ScriptArguments:
    """Data, preset and batch semantics of a recipe (the model's fields are TRL's `ModelConfig`)."""

    dataset_name: str = field(
        default="agentica-org/DeepScaleR-Preview-Dataset",
        metadata={"help": "Hub id, or a local .jsonl/.json/.parquet/.csv file with the same fields."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a hub dataset."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub revision, for reproducibility."})
    problem_column: str = field(default="problem", metadata={"help": "Column with the problem text."})
    answer_column: str = field(default="answer", metadata={"help": "Column with the gold answer."})
    invalid_answers: str = field(
        default="skip",
        metadata={
            "help": "Rows whose gold answer cannot be parsed: 'skip' (reported) or 'error'.",
            "choices": ["skip", "error"],
        },
    )
    duplicate_problems: str = field(
        default="skip",
        metadata={
            "help": "Rows repeating an earlier problem: 'skip' (reported) or 'error'.",
            "choices": ["skip", "error"],
        },
    )
    preset: str = field(
        default="paper",
        metadata={
            "help": "'paper' or 'released': the choices where the DLER paper and its released code differ; "
            "'none' for recipes of other papers.",
            "choices": list(PRESETS),
        },
    )
    grader: str = field(
        default="dler",
        metadata={
            "help": "Math grader: 'dler' (the last \\boxed{} after </think>, math-verify with dler's fixes) or "
            "'released' (the released run's reward: text between the first and second </think>, math-verify OR "
            "string OR sympy). docs/rewards.md.",
            "choices": ["dler", "released"],
        },
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Validation set during training: hub id or local file (released run: AIME-24). None: none."},
    )
    eval_dataset_split: str = field(default="train", metadata={"help": "Split of a hub validation set."})
    eval_problem_column: str = field(default="problem", metadata={"help": "Problem column of the validation set."})
    eval_answer_column: str = field(default="answer", metadata={"help": "Answer column of the validation set."})
    eval_every_generations: int = field(
        default=5,
        metadata={"help": "Validate every this many generation steps (eval_steps = this x updates per generation)."},
    )
    prompts_per_generation: int = field(default=512, metadata={"help": "Prompts per generation batch (paper: 512)."})
    prompts_per_update: int = field(default=64, metadata={"help": "Prompts per optimizer update (paper: 64)."})
    num_processes: int | None = field(
        default=None, metadata={"help": "Training processes; default: WORLD_SIZE from the launcher, else 1."}
    )
    solve_rate_column: str | None = field(
        default=None,
        metadata={"help": "Keep only occasionally solvable problems: 0 < this column < 1 (from `dler solve-rate`)."},
    )
    max_problems: int | None = field(default=None, metadata={"help": "Train on the first N problems only."})
    reward_workers: int | None = field(default=None, metadata={"help": "Grading processes per rank."})
    penalty_module: str | None = field(
        default=None,
        metadata={
            "help": "Module(s) to import before the config is built, comma-separated, so that their "
            "`@register_penalty` penalties can be chosen with --penalty (e.g. my_penalties for ./my_penalties.py). "
            "Installed plugins (entry point group `dler.penalties`) need no flag."
        },
    )
    resume_with_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "Resume even when settings that define the objective differ from those the checkpoints in "
            "output_dir were trained with (refused by default, naming the differences)."
        },
    )
    dry_run: bool = field(
        default=False, metadata={"help": "Print the resolved configuration and batch arithmetic, load nothing."}
    )


def batch_layout(
    prompts_per_generation: int, prompts_per_update: int, num_generations: int, num_processes: int, per_device: int
) -> dict[str, int]:
    """Gradient accumulation and steps per generation that realise the recipe's global batch on `num_processes`."""
    if prompts_per_generation % prompts_per_update:
        raise ValueError(
            f"prompts_per_generation ({prompts_per_generation}) must be a multiple of prompts_per_update "
            f"({prompts_per_update}): one generation batch feeds whole optimizer updates"
        )
    samples_per_update = prompts_per_update * num_generations
    per_step = num_processes * per_device
    if samples_per_update % per_step:
        fits = [
            b
            for b in range(1, samples_per_update // num_processes + 1)
            if samples_per_update % (b * num_processes) == 0
        ]
        what = (
            f"{prompts_per_update} prompts x {num_generations} rollouts = {samples_per_update} samples per update "
            f"cannot be split over {num_processes} processes x per_device_train_batch_size {per_device}."
        )
        if fits:
            raise ValueError(f"{what} With {num_processes} processes use per_device_train_batch_size in {fits}.")
        counts = [n for n in range(1, samples_per_update + 1) if samples_per_update % n == 0][:12]
        raise ValueError(
            f"{what} No per-device batch fits {num_processes} processes: use a process count that divides "
            f"{samples_per_update} ({', '.join(map(str, counts))}), or change prompts_per_update."
        )
    accumulation = samples_per_update // per_step
    updates = prompts_per_generation // prompts_per_update
    return {
        "gradient_accumulation_steps": accumulation,
        "steps_per_generation": accumulation * updates,
        "updates_per_generation": updates,
        "samples_per_update": samples_per_update,
        "samples_per_generation": prompts_per_generation * num_generations,
    }


def _command_line_keys(argv: list[str]) -> set[str]:
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


def _yaml_config(argv: list[str]) -> dict:
    """The settings of the YAML `--config` file, if any (its `env` block aside, which TRL's parser applies)."""
    if "--config" not in argv:
        return {}
    import yaml

    with open(argv[argv.index("--config") + 1]) as f:
        return {k: v for k, v in (yaml.safe_load(f) or {}).items() if k != "env"}


def resolve_preset(name: str, prompts_per_generation: int, dynamic_sampling: bool) -> dict[str, tuple]:
    """The preset's (value, source) per field, with `prompts_per_round` resolved against the batch (and left out when
    dynamic sampling is off, since there are no rounds then)."""
    preset = dict(PRESETS[name])
    if "prompts_per_round" in preset:
        value, source = preset.pop("prompts_per_round")
        if dynamic_sampling:
            preset["prompts_per_round"] = (prompts_per_generation if value == "generation" else value, source)
    return preset


class UsageError(ValueError):
    """A command line the parser cannot read: printed as one line, without argparse's whole usage text."""


class RecipeParser(TrlParser):
    """TRL's parser with one-line errors and DLER's own settings listed first in `--help`."""

    def error(self, message):
        raise UsageError(f"{message} (`--help` lists the settings)")

    def format_help(self):
        own = set(ScriptArguments.__dataclass_fields__) | set(DLERConfig.__dict__["__annotations__"])
        group = self.add_argument_group("dler: the recipe's data and batch, and DLER's settings (TRL's follow)")
        for other in self._action_groups:
            if other is not group:
                moved = [a for a in other._group_actions if a.dest in own]
                other._group_actions[:] = [a for a in other._group_actions if a.dest not in own]
                group._group_actions.extend(moved)
        self._action_groups.remove(group)
        self._action_groups.insert(1, group)  # after the positionals, before every other option
        return super().format_help()


def import_penalty_modules(argv: list[str]) -> list[str]:
    """Import the modules named by `--penalty_module` (command line or YAML) before any config is built, so their
    `@register_penalty` classes can be chosen with `--penalty`. The working directory is importable."""
    names = []
    for i, arg in enumerate(argv):
        if arg in ("--penalty_module", "--penalty-module") and i + 1 < len(argv):
            names += argv[i + 1].split(",")
        elif arg.startswith(("--penalty_module=", "--penalty-module=")):
            names += arg.split("=", 1)[1].split(",")
    value = _yaml_config(argv).get("penalty_module") or []
    names += value.split(",") if isinstance(value, str) else list(value)
    if names and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in dict.fromkeys(n.strip() for n in names if n.strip()):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ValueError(
                f"--penalty_module {name}: cannot import it ({error}). Give a module importable from the working "
                "directory or the installed packages, e.g. `--penalty_module my_penalties` for ./my_penalties.py."
            ) from error
    return names


def _raw_settings(parser: TrlParser, argv: list[str]):
    """Every setting as argparse reads it (defaults, YAML, command line), without building the dataclasses: what
    the batch layout and the preset are derived from, before any check of the final values runs."""
    argv = list(argv)
    if "--config" in argv:
        parser.set_defaults(**_yaml_config(argv))
        i = argv.index("--config")
        del argv[i : i + 2]
    namespace, _ = parser.parse_known_args(argv)
    return namespace


def parse(defaults: dict, argv: list[str] | None = None):
    """Parse a recipe's arguments. Precedence, lowest first: the recipe's defaults, the preset, values derived from
    the batch layout, a YAML `--config`, the command line. Returns the three argument objects, the batch layout and
    where each setting came from."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("--dry-run", "--dry_run") for a in argv):
        argv += ["--use_cpu", "true"]  # a plan, printed anywhere: skip the GPU checks of bf16 and friends
    import_penalty_modules(argv)
    parser = RecipeParser((ScriptArguments, DLERConfig, ModelConfig))
    fields = {f for dc in parser.dataclass_types for f in dc.__dataclass_fields__}
    unknown = sorted(set(defaults) - fields)
    if unknown:
        raise ValueError(f"recipe defaults name unknown fields {unknown}")
    parser.set_defaults(**defaults)
    raw = _raw_settings(parser, argv)
    dynamic_sampling = raw.dynamic_sampling
    if dynamic_sampling is None:
        dynamic_sampling = OPTIMIZER_RECIPES.get(raw.optimizer_recipe, {}).get("dynamic_sampling")
    preset = resolve_preset(raw.preset, raw.prompts_per_generation, bool(dynamic_sampling))
    parser.set_defaults(**{name: value for name, (value, _) in preset.items()})
    raw = _raw_settings(parser, argv)
    num_processes = raw.num_processes or int(os.environ.get("WORLD_SIZE", "1"))
    layout = batch_layout(
        raw.prompts_per_generation,
        raw.prompts_per_update,
        raw.num_generations,
        num_processes,
        raw.per_device_train_batch_size,
    )
    why = f"derived: {raw.prompts_per_update} prompts per update on {num_processes} processes"
    derived = {k: (layout[k], why) for k in ("gradient_accumulation_steps", "steps_per_generation")}
    if raw.eval_dataset_name:
        every = raw.eval_every_generations
        derived.update(
            eval_strategy=("steps", "derived: eval_dataset_name is set"),
            eval_steps=(
                every * layout["updates_per_generation"],
                f"derived: every {every} generation steps x {layout['updates_per_generation']} updates",
            ),
            per_device_eval_batch_size=(
                raw.num_generations_eval or raw.num_generations,
                "derived: one validation group per rank and step",
            ),
        )
    parser.set_defaults(**{name: value for name, (value, _) in derived.items()})
    script_args, training_args, model_args = parser.parse_args_and_config(argv)  # the one build of the configs
    layout["num_processes"] = num_processes
    layout["generation_steps"] = training_args.max_steps / layout["updates_per_generation"]

    command_line, yaml_keys = _command_line_keys(argv), set(_yaml_config(argv))
    own_defaults = DLERConfig.__dict__["__annotations__"]  # fields DLERConfig declares or re-declares

    def source(name: str) -> str:
        if name in command_line:
            return "command line"
        if name in yaml_keys:
            return "YAML config"
        if name in derived:
            return derived[name][1]
        if name in preset:
            return f"preset {script_args.preset}: {preset[name][1]}"
        if name in defaults:
            return "recipe"
        if name in own_defaults:
            return "DLERConfig default (its help names the source)"
        return "default (TRL / transformers)"

    sources = {name: source(name) for name in OBJECTIVE}
    sources["max_steps"] += (
        f" ({layout['generation_steps']:g} generation steps x {layout['updates_per_generation']} updates each)"
    )
    return script_args, training_args, model_args, layout, sources


def describe(script_args, training_args, model_args, layout, sources) -> dict:
    """The resolved run, as `--dry-run` prints it: values, where each came from, and the batch arithmetic."""
    values = {**vars(script_args), **vars(training_args)}
    return {
        "script": vars(script_args),
        "model": {
            k: getattr(model_args, k)
            for k in ("model_name_or_path", "dtype", "use_peft", "lora_r")
            if hasattr(model_args, k)
        },
        "training": {k: values[k] for k in OBJECTIVE + ("output_dir",)},
        "sources": sources,
        "batch": layout,
    }


def select_problems(rows, solve_rate_column: str | None, max_problems: int | None):
    """Occasionally solvable problems only (0 < p < 1, Concise Reasoning via RL), then the first `max_problems`."""
    if solve_rate_column:
        if solve_rate_column not in rows.column_names:
            raise ValueError(
                f"no column {solve_rate_column!r} (columns: {rows.column_names}); run `dler solve-rate` first"
            )
        rates = rows[solve_rate_column]
        keep = [i for i, p in enumerate(rates) if 0 < p < 1]
        logger.warning(
            "Solve rates: %d problems kept (0 < p < 1), %d never solved and %d always solved left out",
            len(keep),
            sum(p <= 0 for p in rates),
            sum(p >= 1 for p in rates),
        )
        if not keep:
            raise ValueError(f"no problem has 0 < {solve_rate_column} < 1: nothing for stage 2 to learn from")
        rows = rows.select(keep)
    if max_problems:
        rows = rows.select(range(min(max_problems, len(rows))))
    return rows


def check_prompts(model_args, training_args, datasets: dict) -> None:
    """Before the model loads: every prompt, cut to `max_prompt_length`, plus a full response must fit the model's
    context (read from its config and tokenizer only); prompts the cap will cut are counted and logged."""
    from transformers import AutoConfig, AutoTokenizer

    from dler.data import check_prompt_lengths, model_context_length, prompt_token_counts

    kwargs = {"revision": model_args.model_revision, "trust_remote_code": training_args.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, **kwargs)
    context = model_context_length(AutoConfig.from_pretrained(model_args.model_name_or_path, **kwargs))
    for name, dataset in datasets.items():
        if dataset is not None:
            counts = prompt_token_counts(dataset, tokenizer)
            check_prompt_lengths(
                counts, training_args.max_prompt_length, training_args.max_completion_length, context, name
            )


RESUME_IGNORES = {  # may change between restarts: how the batch is laid out on the hardware, how often to save
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "per_device_eval_batch_size",
    "max_steps",
    "eval_steps",
    "eval_strategy",
    "save_steps",
    "use_vllm",
    "vllm_mode",
    "grader",
}
RESUME_SCRIPT_SETTINGS = (
    "grader",
    "dataset_name",
    "dataset_split",
    "prompts_per_generation",
    "prompts_per_update",
    "max_problems",
    "solve_rate_column",
)


def run_settings(script_args, training_args, model_args) -> dict:
    """The settings that define what a run trains: a restart must keep them to continue the same run."""
    settings = {name: getattr(training_args, name) for name in OBJECTIVE if name not in RESUME_IGNORES}
    settings.update({name: getattr(script_args, name) for name in RESUME_SCRIPT_SETTINGS})
    settings["model_name_or_path"] = model_args.model_name_or_path
    return json.loads(json.dumps(settings, default=str))


def train(script_args, training_args, model_args, callbacks=None):
    """Take `output_dir` for this run, then train (resuming from its newest whole checkpoint) unless it finished.

    Returns the trainer, or None when the run in `output_dir` had already finished. `callbacks`: extra
    `TrainerCallback`s; a `ProgressCallback` among them replaces the default progress bar.
    """
    output_dir = training_args.output_dir
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"output_dir {output_dir} is a file; give a folder (it is created if missing)")
    check_report_to(training_args.report_to)
    is_main = int(os.environ.get("RANK", "0")) == 0
    with RunLock(output_dir) if is_main else contextlib.nullcontext():
        return _train_in(output_dir, is_main, script_args, training_args, model_args, callbacks)


def _train_in(output_dir, is_main, script_args, training_args, model_args, callbacks):
    """`train` once `output_dir` is this run's."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from dler.data import check_usable_rows, load_rows, math_prompts
    from dler.rewards import MathReward
    from dler.trainer import DLERTrainer

    checkpoint, skipped = find_resume_checkpoint(output_dir)
    for name, problem in skipped:
        logger.warning("Not resuming from %s: %s.", name, problem)
    previous, settings = read_run(output_dir), run_settings(script_args, training_args, model_args)
    if previous and (checkpoint or previous.get("finished")):
        changed = settings_differences(previous["settings"], settings)
        if changed and not script_args.resume_with_changed_settings:
            raise ValueError(
                f"{output_dir} holds a run trained with other settings; continuing it would mix two objectives: "
                + "; ".join(changed)
                + ". Use another --output_dir, restore the settings, or pass --resume_with_changed_settings."
            )
        if changed:
            logger.warning("Resuming with changed settings (--resume_with_changed_settings): %s", "; ".join(changed))
    if previous and previous.get("finished") and previous.get("step", 0) >= training_args.max_steps:
        logger.warning(
            "The run in %s finished at step %d of max_steps=%d: nothing to train (raise --max_steps to continue it).",
            output_dir,
            previous["step"],
            training_args.max_steps,
        )
        return None

    reward = MathReward(
        answer_column=script_args.answer_column, num_workers=script_args.reward_workers, grader=script_args.grader
    )
    rows = select_problems(
        load_rows(script_args.dataset_name, script_args.dataset_split, script_args.dataset_revision),
        script_args.solve_rate_column,
        script_args.max_problems,
    )

    def prepare(rows, problem_column: str, answer_column: str, source: str, needed: int):
        data, skipped = math_prompts(
            rows,
            problem_column=problem_column,
            answer_column=answer_column,
            on_invalid=script_args.invalid_answers,
            reward=reward,
            on_duplicate=script_args.duplicate_problems,
            source=source,
        )
        check_usable_rows(len(data), needed, source, skipped)
        if answer_column != script_args.answer_column:  # the reward reads one column
            data = data.rename_column(answer_column, script_args.answer_column)
        return data

    dataset = prepare(
        rows,
        script_args.problem_column,
        script_args.answer_column,
        script_args.dataset_name,
        script_args.prompts_per_generation,
    )
    eval_dataset = None
    if script_args.eval_dataset_name:
        eval_dataset = prepare(
            load_rows(script_args.eval_dataset_name, script_args.eval_dataset_split),
            script_args.eval_problem_column,
            script_args.eval_answer_column,
            script_args.eval_dataset_name,
            1,
        )
    check_prompts(model_args, training_args, {"training set": dataset, "validation set": eval_dataset})
    if model_args.dtype not in (None, "auto") or model_args.attn_implementation:
        training_args.model_init_kwargs = {
            **(training_args.model_init_kwargs or {}),
            **({"dtype": model_args.dtype} if model_args.dtype not in (None, "auto") else {}),
            **({"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}),
        }
    if training_args.deepspeed and training_args.use_cpu:
        import deepspeed

        # transformers' CPU path sets up torch.distributed but not DeepSpeed's communicator, so ZeRO-3's
        # zero.Init (run while loading the model) would see a world of one process. On GPUs accelerate does this.
        deepspeed.init_distributed(dist_backend="gloo")
    trainer = DLERTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    for callback in [MetricsLog(), *(callbacks or [])]:
        if isinstance(callback, ProgressCallback):
            for default in (ProgressCallback, PrinterCallback):  # the caller's bar replaces the default one
                trainer.remove_callback(default)
        trainer.add_callback(callback)
    if is_main:
        write_json_atomically(os.path.join(output_dir, RUN_FILE), {"settings": settings, "finished": False})
    if checkpoint:
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            step = json.load(f)["global_step"]
        logger.warning("Resuming from %s at step %d of %d.", checkpoint, step, training_args.max_steps)
    trainer.train(resume_from_checkpoint=checkpoint)  # a requeued Slurm job continues where it stopped
    trainer.save_model()
    finish_run(trainer)
    trainer.accelerator.wait_for_everyone()
    if is_main:
        write_json_atomically(
            os.path.join(output_dir, RUN_FILE),
            {"settings": settings, "finished": True, "step": trainer.state.global_step},
        )
    return trainer


def run(defaults: dict, argv: list[str] | None = None, callbacks=None):
    """Parse, then print the plan (`--dry-run`) or train (returns the trainer; None if the run had finished)."""
    script_args, training_args, model_args, layout, sources = parse(defaults, argv)
    if script_args.dry_run:
        print(json.dumps(describe(script_args, training_args, model_args, layout, sources), indent=2, default=str))
        return None
    try:
        return train(script_args, training_args, model_args, callbacks)
    finally:
        leave_process_group()


def main(defaults: dict, argv: list[str] | None = None) -> None:
    """A recipe's `__main__`: `run`, with a configuration, data or command-line error printed as one message and a
    non-zero exit; `--traceback` (or DLER_DEBUG=1) shows the whole traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--traceback" in argv or os.environ.get("DLER_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--traceback"]
    try:
        run(defaults, argv)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        if debug:
            raise
        print(f"error: {error}\n(add --traceback for the full traceback)", file=sys.stderr)
        raise SystemExit(2) from None
