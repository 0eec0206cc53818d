"""DLER on a tiny offline model, for CPUs: the same code path as the R1 recipes (data, real math grader, batch
arithmetic, launchers), in seconds.

By default it trains the tiny Qwen2 model built under runs/tiny/ on first use (nothing is downloaded) on a file of
addition problems. That untrained model never earns the math reward, so the default run checks the machinery, not
learning. `make demo` shows learning with these same settings (`dler.demo.tiny.DEFAULTS`): it warm-starts a model on
its toy task, then trains it with its own model, data and budget on the command line (it prints the command).

    python recipes/dler_tiny.py
    launch/run.sh --cpu --config zero2 --nproc 2 recipes/dler_tiny.py
    python recipes/dler_tiny.py --model_name_or_path runs/demo/sft --dataset_name runs/demo/train.jsonl ...
"""

from dler.demo.tiny import DEFAULTS, prepare  # prepare() is also called by penalty_grid
from dler.recipe import main

if __name__ == "__main__":
    main(DEFAULTS, prepare=prepare)  # builds runs/tiny/ only for a run that trains (not --help, not --dry-run)
