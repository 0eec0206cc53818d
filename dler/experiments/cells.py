"""An experiment's cells: what each trains and evaluates, resolved and validated before the first cell trains.

A cell is one training run of a recipe with its penalty, optimisation recipe and flags (an ablation's), in
`OUT/<cell>/`, evaluated into `OUT/<cell>/eval/`. `resolve` parses every cell's settings afresh (the optimisation
recipe fills fields only while they are unset), builds its penalty with its own kwargs (`dler.experiments.defaults`),
writes the data a cell needs (L1's target column) and checks the data columns, so that a wrong cell fails in one line
naming it before any cell trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ModelConfig, TrlParser

from dler.config import DLERConfig
from dler.experiments.defaults import LENGTH_TARGET_PENALTIES, cell_penalty_kwargs, l1_targets
from dler.recipe import load_recipe, parse
from dler.training import train

# set by the experiment for each cell: given after `--` they would be silently overwritten
CELL_FLAGS = ("--penalty", "--penalty_kwargs", "--optimizer_recipe", "--output_dir")
MARKER = "experiment_cell.json"  # written into a cell's folder when it finished training: its argv and metrics
EVAL_DIR, EVAL_DATA_DIR, VALIDATION = "eval", "eval_data", "validation"


@dataclass
class Cell:
    """One run of the experiment: its folder name, penalty, optimisation recipe and extra flags."""

    name: str
    penalty: str
    optimizer_recipe: str
    flags: list[str] = field(default_factory=list)
    description: str = ""
    role: str = ""  # the plot's marker: grpo / dler (grid), full / ablation (ablations)


@dataclass
class Resolved:
    """A cell with its parsed settings, command line, penalty kwargs and folders."""

    cell: Cell
    argv: list[str]
    script: Any
    training: Any
    model: Any
    penalty_kwargs: dict[str, Any]
    train_dir: Path
    eval_data: list[dict] | None = None  # the validation rows ({problem, answer}) when no --benchmarks are given

    @property
    def eval_dir(self) -> Path:
        return self.train_dir / EVAL_DIR


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
    return (lambda argv: parser.parse_args_and_config(argv)), recipe.main


def check_common_args(rest: list[str]) -> None:
    """The arguments after `--` must not set what each cell sets."""
    for arg in rest:
        flag = arg.split("=", 1)[0].replace("-", "_").replace("__", "--", 1)
        if flag in CELL_FLAGS:
            fix = (
                "per-penalty settings go in --penalty_config FILE"
                if flag == "--penalty_kwargs"
                else "each cell sets it"
            )
            raise ValueError(f"{arg} after `--`: {fix}; remove it")


def budget_of(training) -> int:
    """The recipe's budget L: `truncation_length`, which is the generation cap unless set."""
    return int(training.truncation_length or training.max_completion_length)


def _rows(script, cache: dict) -> list[dict]:
    from dler.data import load_rows

    key = (script.dataset_name, script.dataset_split, script.dataset_revision)
    if key not in cache:
        cache[key] = [dict(r) for r in load_rows(*key)]
    return cache[key]


def _check_columns(rows: list[dict], columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"{where} has no column {', '.join(map(repr, missing))} (columns: {sorted(rows[0])})")


def l1_data(rows: list[dict], script, column: str, budget: int, seed: int, out: Path) -> Path:
    """The recipe's rows with L1's per-row target `column` and its prompt instruction (`add_length_targets`),
    written to `out/data/`; deterministic in `seed`, so every L1 cell of the experiment trains on the same file."""
    from dler.penalties import add_length_targets

    path = out / "data" / f"{column}-L{budget}-seed{seed}.jsonl"
    rows = add_length_targets(rows, l1_targets(budget), column, seed, prompt_column=script.problem_column)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    return path


def validation_rows(script, budget: int, penalty: str, cache: dict) -> list[dict]:
    """What a cell is evaluated on by default: the recipe's validation set (`eval_dataset_name`), else its training
    data (the recipe has no held-out set), as {problem, answer}; an L1 cell's problems ask for `budget` tokens."""
    from dler.data import load_rows
    from dler.penalties.l1 import L1_PROMPT

    if script.eval_dataset_name:
        key = (script.eval_dataset_name, script.eval_dataset_split, None)
        columns = (script.eval_problem_column, script.eval_answer_column)
        if key not in cache:
            cache[key] = [dict(r) for r in load_rows(*key)]
        rows = cache[key]
    else:
        rows, columns = _rows(script, cache), (script.problem_column, script.answer_column)
    _check_columns(rows, list(columns), f"evaluation data {script.eval_dataset_name or script.dataset_name}")
    suffix = " " + L1_PROMPT.format(n=budget) if penalty in LENGTH_TARGET_PENALTIES else ""
    return [{"problem": str(r[columns[0]]) + suffix, "answer": r[columns[1]]} for r in rows]


def _argv(cell: Cell, rest: list[str], out: Path, dry_run: bool, recipe) -> list[str]:
    argv = [*rest, *cell.flags, "--optimizer_recipe", cell.optimizer_recipe, "--output_dir", str(out / cell.name)]
    if dry_run and hasattr(recipe, "DEFAULTS"):
        argv.append("--dry-run")  # dler.recipe resolves a plan anywhere, without GPU checks
    return argv


def resolve_cell(cell, recipe, parse_cell, rest, out, config, evaluate_on_recipe, dry_run, cache) -> Resolved:
    """One cell's settings: probe the lengths with the always-valid truncation penalty, derive the kwargs, write the
    data it needs, then build the config the cell trains with (penalty constructed, cap checked)."""
    base = _argv(cell, rest, out, dry_run, recipe)
    _, probe, _ = parse_cell([*base, "--penalty", "truncation"])
    budget = budget_of(probe)
    kwargs = cell_penalty_kwargs(cell.penalty, budget, probe.max_steps, config)
    argv = [*base, "--penalty", cell.penalty] + (["--penalty_kwargs", json.dumps(kwargs)] if kwargs else [])
    own_data = hasattr(recipe, "DEFAULTS")
    if cell.penalty in LENGTH_TARGET_PENALTIES:
        if not own_data:
            raise ValueError(f"penalty {cell.penalty} needs a target column in every row, and this recipe builds "
                             "its own data: use a dler.recipe recipe (DEFAULTS) or add the column in its main()")  # fmt: skip
        script0, _, _ = parse_cell(argv)
        column = kwargs.get("target_column", "target_length")
        rows = [] if dry_run else _rows(script0, cache)  # a dry run reads and writes no data
        if rows and column not in rows[0]:
            argv += ["--dataset_name", str(l1_data(rows, script0, column, budget, probe.seed, out))]
    script, training, model = parse_cell(argv)  # the config the cell trains with: its penalty is built here
    penalty = training.build_penalty()
    penalty.check_cap(training.max_completion_length)
    eval_data = None
    if own_data and not dry_run:  # a dry run loads nothing: the data are checked when the experiment runs
        rows = _rows(script, cache)
        needed = [script.problem_column, script.answer_column]
        if cell.penalty in LENGTH_TARGET_PENALTIES:
            needed.append(kwargs.get("target_column", "target_length"))
        _check_columns(rows, needed, f"training data {script.dataset_name}")
        if evaluate_on_recipe:
            eval_data = validation_rows(script, budget, cell.penalty, cache)
    elif evaluate_on_recipe:
        raise ValueError("this recipe builds its own data, so there is no validation set to evaluate on: pass "
                         "--benchmarks and --data_dir, or --phase train")  # fmt: skip
    return Resolved(cell, argv, script, training, model, kwargs, out / cell.name, eval_data)


def resolve(cells: list[Cell], recipe_path: str, rest: list[str], out: Path, config: dict, evaluate_on_recipe: bool,
            dry_run: bool = False) -> list[Resolved]:  # fmt: skip
    """Every cell resolved and validated, or a ValueError naming the first cell that cannot run and why."""
    check_common_args(rest)
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError(f"two cells share a folder name: {sorted(n for n in names if names.count(n) > 1)}")
    recipe = grid_recipe(recipe_path)
    parse_cell, _ = recipe_runner(recipe)
    unused = sorted(set(config) - {c.penalty for c in cells})
    if unused:
        raise ValueError(
            f"--penalty_config names {unused}, which no cell uses (cells: {sorted({c.penalty for c in cells})})"
        )
    resolved, cache = [], {}
    for cell in cells:
        try:
            resolved.append(
                resolve_cell(cell, recipe, parse_cell, rest, out, config, evaluate_on_recipe, dry_run, cache)
            )
        except SystemExit as error:  # argparse's usage errors
            raise ValueError(
                f"cell {cell.name}: its arguments do not parse (exit {error.code}): {' '.join(rest)}"
            ) from None
        except (ValueError, TypeError, OSError, AttributeError) as error:
            raise ValueError(f"cell {cell.name}: {error}") from error
    for r in resolved:
        marker = r.train_dir / MARKER
        if marker.is_file() and json.loads(marker.read_text()).get("argv") != r.argv:
            raise ValueError(f"cell {r.cell.name}: {r.train_dir} was trained with other settings (see {marker}); "
                             "delete that folder or use another --output_dir")  # fmt: skip
    return resolved
