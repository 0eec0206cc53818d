"""The demo's two training stages: SFT on verbose solutions, then DLER with the tiny recipe's settings."""

from __future__ import annotations

from pathlib import Path

from dler.demo.console import progress_callback

RERUN = ["python", "recipes/dler_tiny.py"]  # the DLER stage as a command line, printed so it can be rerun


def warm_start(args, task, tokenizer, model, output_dir: Path):
    """SFT on verbose solutions with TRL's `SFTTrainer`; the model and tokenizer are saved to `output_dir`."""
    from trl import SFTConfig, SFTTrainer

    from dler.demo.toy import sft_dataset
    from dler.run_logs import use_progress_bar

    config = SFTConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=args.sft_batch,
        max_steps=args.sft_steps,
        learning_rate=args.sft_lr,
        # warm up, hold the learning rate while the column look-ups are being learnt, then decay to consolidate
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs={"num_decay_steps": args.sft_steps // 4},
        warmup_steps=0.05,
        weight_decay=0.0,
        max_length=256,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=sft_dataset(task, args.sft_problems, seed=args.seed + 1),
        processing_class=tokenizer,
    )
    use_progress_bar(trainer, progress_callback("SFT ", {"loss": "loss", "mean_token_accuracy": "token acc"}))
    trainer.train()
    trainer.save_model(str(output_dir))
    return trainer.model


def recipe_command(args, budget: int, max_new_tokens: int, sft_dir: Path, data: Path, output_dir: Path) -> list[str]:
    """The command-line overrides of the tiny recipe for the demo's DLER stage (also printed, to rerun it)."""
    return [
        "--model_name_or_path", str(sft_dir),
        "--dataset_name", str(data),
        "--output_dir", str(output_dir),
        "--prompts_per_generation", "8",  # 8 prompts x 8 rollouts per generation batch ...
        "--prompts_per_update", "4",  # ... feeding 2 optimizer updates, so clip-higher can act
        "--num_generations", "8",
        "--per_device_train_batch_size", "32",
        "--max_completion_length", str(max_new_tokens),
        "--truncation_length", str(budget),
        "--temperature", "1.0",
        "--dynamic_sampling", "true",
        "--max_sampling_rounds", "4",  # once most groups are all correct and short, train on what was kept
        "--dynamic_sampling_exhausted", "partial",
        "--learning_rate", str(args.rl_lr),
        "--max_steps", str(args.rl_steps),
        "--save_strategy", "no",
        "--seed", str(args.seed),
        "--data_seed", str(args.seed),
    ]  # fmt: skip


def train_dler(command: list[str]):
    """The DLER stage: the tiny recipe's settings with the demo's overrides, in this process (for the progress bar)."""
    from dler.demo.tiny import DEFAULTS
    from dler.recipe import run

    metrics = {"dler/correctness": "acc", "completions/mean_length": "len", "dler/over_budget_frac": "over budget"}
    return run(DEFAULTS, command, callbacks=[progress_callback("DLER", metrics)])
