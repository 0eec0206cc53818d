"""DLER on a tiny offline model, for CPUs: the same code path as the R1 recipes (data, real math grader, batch
arithmetic, launchers), in seconds.

By default it trains the tiny Qwen2 model built under runs/tiny/ on first use (nothing is downloaded) on a file of
addition problems. That untrained model never earns the math reward, so the default run checks the machinery, not
learning. `make demo` shows learning through this same recipe: it warm-starts a model on its toy task, then runs
this file's `DEFAULTS` with its own model, data and budget on the command line (it prints the command).

    python recipes/dler_tiny.py
    launch/run.sh --cpu --config zero2 --nproc 2 recipes/dler_tiny.py
    python recipes/dler_tiny.py --model_name_or_path runs/demo/sft --dataset_name runs/demo/train.jsonl ...
"""

from dler.recipe import main
from dler.tiny import ensure_tiny_assets


def prepare():
    """Build the tiny model and the training file if they are not there yet (also called by penalty_grid)."""
    ensure_tiny_assets()


DEFAULTS = {
    "model_name_or_path": "runs/tiny/model",
    "dataset_name": "runs/tiny/train.jsonl",
    "output_dir": "runs/dler-tiny",
    "use_cpu": True,
    "bf16": False,
    "dtype": "float32",
    "gradient_checkpointing": False,
    "use_vllm": False,
    "prompts_per_generation": 4,
    "prompts_per_update": 2,
    "num_generations": 4,
    "per_device_train_batch_size": 4,
    "max_completion_length": 32,
    "truncation_length": 24,
    "dynamic_sampling": False,  # the untrained model never scores: no group would ever carry signal
    "learning_rate": 1e-4,
    "max_steps": 4,
    "save_steps": 2,
    "logging_steps": 1,
    "report_to": "none",
    "reward_workers": 1,
}

if __name__ == "__main__":
    prepare()
    main(DEFAULTS)
