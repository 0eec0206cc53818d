"""The DLER paper's Fig. 8 grid: every length penalty under each optimisation recipe, on one model.

Each cell runs a training recipe with `--penalty P --optimizer_recipe R --output_dir OUT/P-R` added to the
arguments given after `--`, then records the cell's final metrics in OUT/grid.json and OUT/grid.md. A recipe is
either one of recipes/*.py (a `DEFAULTS` dict for `dler.recipe`, and optionally `prepare()`), or any script with
`ScriptArguments` and `main(script_args, training_args, model_args)` returning the trainer.

    python recipes/penalty_grid.py --recipe recipes/dler_tiny.py --penalties truncation,cosine,kimi \
        --optimizer_recipes grpo,dler --output_dir runs/grid -- --max_steps 50
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trl import ModelConfig, TrlParser

from dler import DLERConfig
from dler.recipe import load_recipe, parse
from dler.training import train

REPORTED = ("dler/correctness", "dler/shaped_reward", "completions/mean_length", "dler/over_budget_frac")


def grid_recipe(path: str):
    """The recipe run in each cell: a `dler.recipe` recipe (DEFAULTS) or a script with ScriptArguments and main()."""
    recipe = load_recipe(path)
    if not hasattr(recipe, "DEFAULTS") and not all(hasattr(recipe, n) for n in ("ScriptArguments", "main")):
        raise AttributeError(
            f"--recipe {path} has neither DEFAULTS (a dler.recipe recipe) nor ScriptArguments and main()"
        )
    return recipe


def recipe_runner(recipe):
    """(parse argv -> (script, training, model) args, train -> trainer) for either kind of recipe."""
    if hasattr(recipe, "DEFAULTS"):
        return (lambda argv: parse(recipe.DEFAULTS, argv)[:3]), train
    parser = TrlParser((recipe.ScriptArguments, DLERConfig, ModelConfig))
    return parser.parse_args_and_config, recipe.main


def final_metrics(log_history: list[dict]) -> dict:
    """The last logged value of each reported metric."""
    out = {}
    for entry in log_history:
        out.update({k: entry[k] for k in REPORTED if k in entry})
    return out


def main(argv=None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/dler_tiny.py", help="training script run in each cell")
    parser.add_argument("--penalties", default="truncation,soft_overlong,cosine,kimi,efficient,shorterbetter")
    parser.add_argument("--optimizer_recipes", default="grpo,dler")
    parser.add_argument("--output_dir", default="runs/penalty_grid")
    parser.add_argument("--dry-run", action="store_true", help="print the cells' settings and exit")
    args = parser.parse_args(ours)

    recipe = grid_recipe(args.recipe)
    parse_cell, train_cell = recipe_runner(recipe)
    cells = []
    for penalty in args.penalties.split(","):
        for optimizer in args.optimizer_recipes.split(","):
            out = str(Path(args.output_dir) / f"{penalty}-{optimizer}")
            cell_args = [*rest, "--penalty", penalty, "--optimizer_recipe", optimizer, "--output_dir", out]
            if args.dry_run and hasattr(recipe, "DEFAULTS"):
                cell_args.append("--dry-run")  # dler.recipe resolves a plan anywhere, without GPU checks
            # Parsed afresh per cell: the optimizer recipe fills in fields only while they are unset.
            cells.append((penalty, optimizer, parse_cell(cell_args)))

    if not args.dry_run and hasattr(recipe, "prepare"):
        recipe.prepare()
    results = []
    for penalty, optimizer, (script_args, training_args, model_args) in cells:
        settings = {
            "penalty": penalty,
            "penalty_kwargs": training_args.penalty_kwargs,
            "optimizer_recipe": optimizer,
            "advantage_normalization": training_args.advantage_normalization,
            "epsilon_high": training_args.epsilon_high,
            "dynamic_sampling": training_args.dynamic_sampling,
            "output_dir": training_args.output_dir,
        }
        if args.dry_run:
            print(json.dumps(settings))
            continue
        print(f"== {penalty} x {optimizer} ==", flush=True)
        trainer = train_cell(script_args, training_args, model_args)
        if trainer is None:  # the cell had finished in an earlier run: its metrics are in its output_dir
            history = json.loads((Path(training_args.output_dir) / "trainer_state.json").read_text())["log_history"]
        else:
            history = trainer.state.log_history
        results.append({**settings, **final_metrics(history)})

    if not args.dry_run:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / "grid.json").write_text(json.dumps(results, indent=2))
        lines = ["| penalty | recipe | " + " | ".join(REPORTED) + " |", "|---|---|" + "---|" * len(REPORTED)]
        for r in results:
            values = " | ".join(f"{r[k]:.4g}" if k in r else "-" for k in REPORTED)
            lines.append(f"| {r['penalty']} | {r['optimizer_recipe']} | {values} |")
        (Path(args.output_dir) / "grid.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
