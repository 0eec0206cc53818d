"""What every training recipe shares: presets, the paper's batch arithmetic, `--dry-run`, and the training run.

A recipe (recipes/*.py) is a dict of defaults handed to `run`. Precedence, lowest first: the recipe's defaults, the
`--preset` (paper | released), a YAML `--config`, the command line. Global batch semantics are the recipe's
(prompts per generation, prompts per optimizer update, rollouts per prompt); the per-device batch, gradient
accumulation and steps per generation are derived from the number of processes, or the run fails saying why.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser, get_peft_config

from dler.config import DLERConfig

logger = logging.getLogger(__name__)

PRESETS = {
    # The paper's choices (arXiv 2510.15110) against its released launch script; see DLER-REFERENCE "Released
    # code vs paper".
    "paper": {"truncated_reward_scale": 0.0, "advantage_weighting": "sequence", "dynamic_sampling_metric": "reward"},
    "released": {
        "truncated_reward_scale": 0.1,
        "advantage_weighting": "token",
        "dynamic_sampling_metric": "correctness",
    },
    "none": {},  # recipes of other papers, which the DLER paper/released split does not describe
}


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
        raise ValueError(
            f"{prompts_per_update} prompts x {num_generations} rollouts = {samples_per_update} samples per update "
            f"cannot be split over {num_processes} processes x per_device_train_batch_size {per_device}. "
            f"With {num_processes} processes use per_device_train_batch_size in {fits}, or change the process count."
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


def parse(defaults: dict, argv: list[str] | None = None):
    """Parse a recipe's arguments: defaults < preset < YAML config < command line, plus the derived batch layout."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("--dry-run", "--dry_run") for a in argv):
        argv += ["--use_cpu", "true"]  # a plan, printed anywhere: skip the GPU checks of bf16 and friends
    parser = TrlParser((ScriptArguments, DLERConfig, ModelConfig))
    fields = {f for dc in parser.dataclass_types for f in dc.__dataclass_fields__}
    unknown = sorted(set(defaults) - fields)
    if unknown:
        raise ValueError(f"recipe defaults name unknown fields {unknown}")
    parser.set_defaults(**defaults)
    script_args, training_args, _ = parser.parse_args_and_config(argv)
    parser.set_defaults(**{**defaults, **PRESETS[script_args.preset]})

    num_processes = script_args.num_processes or int(os.environ.get("WORLD_SIZE", "1"))
    layout = batch_layout(
        script_args.prompts_per_generation,
        script_args.prompts_per_update,
        training_args.num_generations,
        num_processes,
        training_args.per_device_train_batch_size,
    )
    derived = [
        "--gradient_accumulation_steps",
        str(layout["gradient_accumulation_steps"]),
        "--steps_per_generation",
        str(layout["steps_per_generation"]),
    ]
    script_args, training_args, model_args = parser.parse_args_and_config(derived + argv)  # the command line wins
    layout["num_processes"] = num_processes
    return script_args, training_args, model_args, layout


def describe(script_args, training_args, model_args, layout) -> dict:
    """The resolved run, as `--dry-run` prints it."""
    keep = (
        "output_dir",
        "learning_rate",
        "lr_scheduler_type",
        "weight_decay",
        "max_grad_norm",
        "beta",
        "epsilon",
        "epsilon_high",
        "loss_type",
        "num_generations",
        "temperature",
        "top_p",
        "max_completion_length",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "steps_per_generation",
        "max_steps",
        "truncation_length",
        "truncated_reward_scale",
        "length_budgets",
        "optimizer_recipe",
        "penalty",
        "penalty_kwargs",
        "advantage_normalization",
        "advantage_weighting",
        "dynamic_sampling",
        "dynamic_sampling_metric",
        "max_sampling_rounds",
        "use_vllm",
        "vllm_mode",
        "save_steps",
        "seed",
    )
    return {
        "script": vars(script_args),
        "model": {
            k: getattr(model_args, k)
            for k in ("model_name_or_path", "dtype", "use_peft", "lora_r")
            if hasattr(model_args, k)
        },
        "training": {k: getattr(training_args, k) for k in keep},
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


def train(script_args, training_args, model_args, callbacks=None):
    """Load data and model, train with DLER, resume from the last checkpoint in `output_dir` if there is one.

    `callbacks`: extra `TrainerCallback`s; a `ProgressCallback` among them replaces the default progress bar.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.trainer_utils import get_last_checkpoint

    from dler.data import load_rows, math_prompts
    from dler.rewards import MathReward
    from dler.trainer import DLERTrainer

    reward = MathReward(answer_column=script_args.answer_column, num_workers=script_args.reward_workers)
    rows = select_problems(
        load_rows(script_args.dataset_name, script_args.dataset_split, script_args.dataset_revision),
        script_args.solve_rate_column,
        script_args.max_problems,
    )
    if len(rows) < script_args.prompts_per_generation:
        raise ValueError(
            f"{len(rows)} problems cannot fill a generation batch of prompts_per_generation="
            f"{script_args.prompts_per_generation}; lower it (and prompts_per_update) or add problems"
        )
    dataset = math_prompts(
        rows,
        problem_column=script_args.problem_column,
        answer_column=script_args.answer_column,
        on_invalid=script_args.invalid_answers,
        reward=reward,
        on_duplicate=script_args.duplicate_problems,
    )
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
        peft_config=get_peft_config(model_args),
    )
    for callback in callbacks or []:
        if isinstance(callback, ProgressCallback):
            for default in (ProgressCallback, PrinterCallback):  # the caller's bar replaces the default one
                trainer.remove_callback(default)
        trainer.add_callback(callback)
    last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    trainer.train(resume_from_checkpoint=last)  # a requeued Slurm job continues where it stopped
    trainer.save_model()
    return trainer


def run(defaults: dict, argv: list[str] | None = None, callbacks=None):
    """A recipe's `__main__`: parse, then print the plan (`--dry-run`) or train (returns the trainer)."""
    script_args, training_args, model_args, layout = parse(defaults, argv)
    if script_args.dry_run:
        print(json.dumps(describe(script_args, training_args, model_args, layout), indent=2, default=str))
        return None
    return train(script_args, training_args, model_args, callbacks)
