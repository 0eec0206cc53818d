"""A training recipe's entry point: its settings, resolved from every layer, `--dry-run`, and the training run.

A recipe (recipes/*.py) is a dict of defaults handed to `run`. Precedence, lowest first: the recipe's defaults, the
`--preset` (paper | released), values derived from the batch layout, a YAML `--config`, the command line. Global
batch semantics are the recipe's (prompts per generation, prompts per optimizer update, rollouts per prompt);
gradient accumulation and updates per generation are derived from them and the number of processes, or the run fails
saying why, and `DLERConfig` derives steps per generation from those two.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dler.cpu_threads import for_cpu_run
from dler.presets import OBJECTIVE, OPTIMIZER_RECIPES, PRESETS, resolve_preset
from dler.prompts import prompt_settings
from dler.recipe_cli import RecipeParser, UsageError, command_line_keys, yaml_config
from dler.recipe_help import short_help
from dler.runs import leave_process_group

# TRL's configs and trainers (and torch) are imported where they are used: a recipe's `--help` loads none of them.


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
    prompt_format: str = field(
        default="r1",
        metadata={"help": "How a problem becomes a prompt; `dler eval` reads it too (docs/prompts.md): r1, boxed..."},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System prompt; None: the format's, '': none."})
    chat_template: bool = field(
        default=True, metadata={"help": "False (--no_chat_template): the prompt is raw text; True: the format's."}
    )
    answer_region: str | None = field(
        default=None,
        metadata={"help": "Where the reward reads the answer: after-think (first </think>) or whole; None: format's."},
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

    def __post_init__(self):  # prompt settings that cannot work fail here, before anything loads (dler.training)
        from dler.prompts import check_trainable, resolve

        chat, region = (None if self.chat_template else False), self.answer_region
        check_trainable(
            resolve(self.prompt_format, system_prompt=self.system_prompt, chat_template=chat, answer_region=region)
        )


# What `parse` derives from the recipe's global batch (DLERConfig then derives steps_per_generation, TRL the
# generation batch): set directly, they would disagree with prompts_per_generation / prompts_per_update.
DERIVED_LAYOUT = {
    "gradient_accumulation_steps",
    "updates_per_generation",
    "steps_per_generation",
    "generation_batch_size",
}


def batch_layout(
    prompts_per_generation: int, prompts_per_update: int, num_generations: int, num_processes: int, per_device: int
) -> dict[str, int]:
    """Gradient accumulation and updates per generation that realise the recipe's global batch on `num_processes`
    (`DLERConfig` multiplies them into steps per generation)."""
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
        "updates_per_generation": updates,
        "samples_per_update": samples_per_update,
        "samples_per_generation": prompts_per_generation * num_generations,
    }


def import_penalty_modules(argv: list[str]) -> list[str]:
    """Import the modules named by `--penalty_module` (command line or YAML) before any config is built, so their
    `@register_penalty` classes can be chosen with `--penalty`. The working directory is importable."""
    names = []
    for i, arg in enumerate(argv):
        if arg in ("--penalty_module", "--penalty-module") and i + 1 < len(argv):
            names += argv[i + 1].split(",")
        elif arg.startswith(("--penalty_module=", "--penalty-module=")):
            names += arg.split("=", 1)[1].split(",")
    value = yaml_config(argv).get("penalty_module") or []
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


def _raw_settings(parser: RecipeParser, argv: list[str]):
    """Every setting as argparse reads it (defaults, YAML, command line), without building the dataclasses: what
    the batch layout and the preset are derived from, before any check of the final values runs."""
    argv = list(argv)
    if "--config" in argv:
        parser.set_defaults(**yaml_config(argv))
        i = argv.index("--config")
        del argv[i : i + 2]
    namespace, remaining = parser.parse_known_args(argv)
    parser.check_unknown(remaining, {}, None)  # a misspelled flag: one line with the closest setting
    return namespace


def parse(defaults: dict, argv: list[str] | None = None):
    """Parse a recipe's arguments. Precedence, lowest first: the recipe's defaults, the preset, values derived from
    the batch layout, a YAML `--config`, the command line. Returns the three argument objects, the batch layout and
    where each setting came from."""
    from trl import ModelConfig

    from dler.config import DLERConfig

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("--dry-run", "--dry_run") for a in argv):
        argv += ["--use_cpu", "true"]  # a plan, printed anywhere: skip the GPU checks of bf16 and friends
    import_penalty_modules(argv)
    own = set(ScriptArguments.__dataclass_fields__) | set(DLERConfig.__dict__["__annotations__"])
    parser = RecipeParser((ScriptArguments, DLERConfig, ModelConfig), own=own)
    fields = {f for dc in parser.dataclass_types for f in dc.__dataclass_fields__}
    if "--config" in argv:  # an unknown YAML key: one line naming the file, the key and the closest setting
        parser.check_unknown([], yaml_config(argv), argv[argv.index("--config") + 1])
    unknown = sorted(set(defaults) - fields)
    if unknown:
        raise ValueError(f"recipe defaults name unknown fields {unknown}")
    parser.set_defaults(**defaults)
    given = sorted(DERIVED_LAYOUT & (command_line_keys(argv) | set(yaml_config(argv))))
    if given:
        raise UsageError(
            f"{given[0]}: a recipe derives the batch layout from prompts_per_generation, prompts_per_update, "
            "num_generations and per_device_train_batch_size; set those instead"
        )
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
    derived = {k: (layout[k], why) for k in ("gradient_accumulation_steps", "updates_per_generation")}
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
    updates = training_args.updates_per_generation
    batch = {  # as built: steps_per_generation is DLERConfig's
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "steps_per_generation": training_args.steps_per_generation,
        "updates_per_generation": updates,
        "samples_per_update": layout["samples_per_update"],
        "samples_per_generation": layout["samples_per_generation"],
        "num_processes": num_processes,
        "generation_steps": training_args.max_steps / updates,
    }

    command_line, yaml_keys = command_line_keys(argv), set(yaml_config(argv))
    filled = OPTIMIZER_RECIPES[training_args.optimizer_recipe]
    own_defaults = DLERConfig.__dict__["__annotations__"]  # fields DLERConfig declares or re-declares

    scale_rewards = training_args.scale_rewards  # when set, it chose advantage_normalization (DLERConfig)
    layers = [  # where a setting came from: the first layer that names it
        dict.fromkeys(command_line, "command line"),
        dict.fromkeys(yaml_keys, "YAML config"),
        {"steps_per_generation": "derived by DLERConfig: gradient_accumulation_steps x updates_per_generation"},
        {name: why for name, (_, why) in derived.items()},
        {name: f"preset {script_args.preset}: {why}" for name, (_, why) in preset.items()},
        dict.fromkeys(defaults, "recipe"),
        {"truncation_length": "derived: max_completion_length"},
        {"advantage_normalization": f"derived: scale_rewards={scale_rewards!r}"} if scale_rewards else {},
        dict.fromkeys(filled, f"optimizer_recipe {training_args.optimizer_recipe}: fills it when unset"),
        dict.fromkeys(own_defaults, "DLERConfig default (its help names the source)"),
    ]
    sources = {
        name: next((layer[name] for layer in layers if name in layer), "default (TRL / transformers)")
        for name in OBJECTIVE
    }
    sources["max_steps"] += f" ({batch['generation_steps']:g} generation steps x {updates} updates each)"
    return script_args, training_args, model_args, batch, sources


def describe(script_args, training_args, model_args, layout, sources) -> dict:
    """The resolved run, as `--dry-run` prints it: values, where each came from, and the batch arithmetic."""
    from dler.training import training_prompt

    values = {**vars(script_args), **vars(training_args)}
    return {
        "script": vars(script_args),
        "model": {
            k: getattr(model_args, k)
            for k in ("model_name_or_path", "dtype", "use_peft", "lora_r")
            if hasattr(model_args, k)
        },
        "training": {k: values[k] for k in OBJECTIVE + ("output_dir",)},
        "prompt": prompt_settings(training_prompt(script_args, training_args)),  # answer region resolved
        "sources": sources,
        "batch": layout,
    }


def load_recipe(path: str | os.PathLike):
    """The recipe script at `path` as a module, its `__main__` block not run (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if spec is None or not Path(path).is_file():
        raise FileNotFoundError(f"recipe {path}: no such file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(defaults: dict, argv: list[str] | None = None, callbacks=None, prepare=None):
    """Parse, then print the plan (`--dry-run`) or train (returns the trainer; None if the run had finished).
    `prepare()`, if given, builds what the recipe's defaults name (the tiny model): only for a run that trains."""
    from dler.run_console import quiet_known_warnings
    from dler.training import train

    quiet_known_warnings()
    script_args, training_args, model_args, layout, sources = parse(defaults, argv)
    if script_args.dry_run:
        print(json.dumps(describe(script_args, training_args, model_args, layout, sources), indent=2, default=str))
        return None
    if prepare is not None:
        prepare()
    try:
        return train(script_args, training_args, model_args, callbacks)
    finally:
        leave_process_group()


def main(defaults: dict, argv: list[str] | None = None, prepare=None) -> None:
    """A recipe's `__main__`: `run`, with a configuration, data or command-line error printed as one message and a
    non-zero exit; `--traceback` (or DLER_DEBUG=1) shows the whole traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--traceback" in argv or os.environ.get("DLER_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--traceback"]
    try:
        short_help(defaults, argv, ScriptArguments)  # prints and exits for a short --help
        cpu_threads = for_cpu_run(argv)  # before torch loads: OpenMP reads its wait policy once

        def before_training():
            for step in (cpu_threads, prepare):
                if step is not None:
                    step()

        run(defaults, argv, prepare=before_training)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        if debug:
            raise
        print(f"error: {error}\n(add --traceback for the full traceback)", file=sys.stderr)
        raise SystemExit(2) from None
