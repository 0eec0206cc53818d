"""The DLER paper's Fig. 8 grid: every length penalty under each optimisation recipe, on one model.

Each cell runs the training recipe with `--penalty P --optimizer_recipe R --output_dir OUT/P-R` and the arguments
given after `--`; its penalty gets its own kwargs, derived from the recipe's budget (`dler.experiments.defaults`) with
`--penalty_config FILE` (YAML: penalty -> kwargs) over them. Every cell is validated before the first one trains;
each finished cell is evaluated into OUT/P-R/eval (the recipe's validation set, its training data when it has none,
or `--benchmarks`), and OUT/grid.json, OUT/grid.md tabulate them. `dler report OUT` draws the accuracy-length plane
with an arrow from each penalty's GRPO cell to its DLER cell. Rerunning resumes cell by cell. docs/experiments.md.

    python recipes/penalty_grid.py                                 # the tiny recipe, every default penalty
    python recipes/penalty_grid.py --recipe recipes/dler_r1_7b.py --penalties truncation,cosine,l1_max,laser \
        --output_dir runs/grid-7b --benchmarks aime24,math500 -- --max_steps 400
"""

from __future__ import annotations

import argparse

from dler.experiments.cells import Cell
from dler.experiments.runner import add_experiment_args, main_guard, run_experiment, split_argv

# Fig. 8's penalties (truncation, cosine, L1-Max, Laser), the adaptive Laser-D and the other published ones
PENALTIES = "truncation,soft_overlong,cosine,kimi,laser,laser_d,l1_max,efficient,shorterbetter"
OPTIMIZER_RECIPES = "grpo,dler"


def grid_cells(penalties: list[str], optimizers: list[str]) -> tuple[list[Cell], list[tuple[str, str]]]:
    """One cell per penalty x optimisation recipe, and an arrow from each penalty's grpo cell to its dler cell."""
    cells = [
        Cell(f"{p}-{o}", p, o, description=f"penalty {p}, optimizer recipe {o}", role=o)
        for p in penalties
        for o in optimizers
    ]
    arrows = [(f"{p}-grpo", f"{p}-dler") for p in penalties if {"grpo", "dler"} <= set(optimizers)]
    return cells, arrows


def main(argv=None) -> list[dict]:
    ours, rest = split_argv(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--penalties", default=PENALTIES, help="comma-separated penalty names")
    parser.add_argument("--optimizer_recipes", default=OPTIMIZER_RECIPES, help="comma-separated: grpo, dler")
    add_experiment_args(parser, "runs/penalty_grid")
    args = parser.parse_args(ours)
    cells, arrows = grid_cells(args.penalties.split(","), args.optimizer_recipes.split(","))
    return run_experiment("penalty_grid", "grid", cells, arrows, args, rest)


if __name__ == "__main__":
    main_guard(main)
