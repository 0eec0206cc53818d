"""Run an experiment cell by cell: validate every cell, train (resumable), evaluate (resumable), tabulate.

Phases (`--phase`): `train`, `eval`, or `all` (default). A finished cell is skipped and says so; a half-trained one
resumes from its newest checkpoint (the recipe's resume); evaluation resumes problem by problem (`dler eval`). Under
several processes (WORLD_SIZE > 1, e.g. launch/run.sh) only the train phase runs: evaluation loads one model per
process, so it runs afterwards in one process with `--phase eval` (the make targets run both phases).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from dler.experiments.cells import (
    EVAL_DATA_DIR,
    MARKER,
    VALIDATION,
    Cell,
    Resolved,
    grid_recipe,
    recipe_runner,
    resolve,
)
from dler.experiments.defaults import read_penalty_config
from dler.experiments.table import EXPERIMENT_FILE, final_metrics, write_table

PHASES = ("all", "train", "eval")


def add_experiment_args(parser: argparse.ArgumentParser, output_dir: str) -> None:
    """The flags the grid and the ablations share (the cells' own flags are each script's)."""
    parser.add_argument("--recipe", default="recipes/dler_tiny.py", help="training recipe run in each cell")
    parser.add_argument("--output_dir", default=output_dir, help="one folder per cell, the table and experiment.json")
    parser.add_argument("--penalty_config", default=None, metavar="FILE",
                        help="YAML: penalty -> kwargs, merged over the defaults derived from the recipe's budget")  # fmt: skip
    parser.add_argument("--phase", choices=PHASES, default="all", help="train, eval, or both (all)")
    parser.add_argument("--benchmarks", default=None, help="evaluate on these dler eval benchmarks instead of the "
                        "recipe's validation set (its training data when it has none)")  # fmt: skip
    parser.add_argument("--data_dir", default=None, help="local <benchmark>.jsonl files for --benchmarks")
    parser.add_argument("--eval_limit", type=int, default=None, help="first N problems of each evaluation set")
    parser.add_argument("--eval_n", type=int, default=None, help="samples per problem [num_generations_eval, else "
                        "num_generations]")  # fmt: skip
    parser.add_argument("--eval_max_tokens", type=int, default=None, help="[max_completion_length]")
    parser.add_argument("--eval_temperature", type=float, default=None, help="[eval_temperature, else temperature]")
    parser.add_argument("--eval_backend", default="auto", choices=["auto", "vllm", "transformers"])
    parser.add_argument("--dry-run", action="store_true", help="print the cells' settings and exit")


def split_argv(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(the experiment's flags, the recipe arguments given after `--`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])


def eval_config(r: Resolved, args) -> Any:
    """The cell's `dler eval` settings: its recipe's generation settings unless the flags say otherwise."""
    from dler.eval.settings import EvalConfig

    t = r.training
    temperature = args.eval_temperature
    if temperature is None:
        temperature = t.eval_temperature if t.eval_temperature is not None else t.temperature
    return EvalConfig(
        model=str(r.train_dir), output_dir=str(r.eval_dir),
        benchmarks=args.benchmarks.split(",") if args.benchmarks else [VALIDATION],
        data_dir=args.data_dir if args.benchmarks else str(r.train_dir / EVAL_DATA_DIR),
        n=args.eval_n or t.num_generations_eval or t.num_generations, temperatures=[temperature],
        top_p=t.top_p, max_tokens=args.eval_max_tokens or t.max_completion_length, backend=args.eval_backend,
        seed=t.seed, limit=args.eval_limit, grader=getattr(r.script, "grader", "dler"), progress=False,
    )  # fmt: skip


def experiment_record(kind: str, table: str, resolved: list[Resolved], arrows, args, rest) -> dict[str, Any]:
    """experiment.json: which folder is which cell (paths relative to the experiment folder), and the arrows."""
    out = Path(args.output_dir)
    cells = [{"name": r.cell.name, "penalty": r.cell.penalty, "optimizer_recipe": r.cell.optimizer_recipe,
              "role": r.cell.role, "description": r.cell.description, "flags": r.cell.flags,
              "penalty_kwargs": r.penalty_kwargs, "train_dir": str(r.train_dir.relative_to(out)),
              "eval_dir": str(r.eval_dir.relative_to(out))} for r in resolved]  # fmt: skip
    return {"kind": kind, "table": table, "recipe": args.recipe, "recipe_args": rest, "cells": cells,
            "arrows": [list(a) for a in arrows]}  # fmt: skip


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def train_phase(resolved: list[Resolved], recipe_path: str) -> None:
    """Train every cell not finished yet (decided before the first one trains, so that every rank agrees)."""
    _, train_cell = recipe_runner(grid_recipe(recipe_path))
    finished = {r.cell.name for r in resolved if (r.train_dir / MARKER).is_file()}
    for r in resolved:
        if r.cell.name in finished:
            print(f"== {r.cell.name}: trained earlier ({r.train_dir / MARKER}), skipped ==", flush=True)
            continue
        print(f"== {r.cell.name}: {r.cell.description} ==", flush=True)
        trainer = train_cell(r.script, r.training, r.model)
        if trainer is None:  # the run had finished in an earlier run: its metrics are in its output_dir
            history = json.loads((r.train_dir / "trainer_state.json").read_text())["log_history"]
        else:
            history = trainer.state.log_history
        if _rank() == 0:
            r.train_dir.mkdir(parents=True, exist_ok=True)
            marker = {"argv": r.argv, "metrics": final_metrics(history)}
            (r.train_dir / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def eval_phase(resolved: list[Resolved], args) -> None:
    """Evaluate every trained cell into OUT/<cell>/eval (resumable: `dler eval` skips the problems it has)."""
    from dler.eval.benchmarks import Benchmark, register_benchmark
    from dler.eval.run import evaluate, format_summary

    register_benchmark(Benchmark(VALIDATION, "the recipe's validation set", description="experiment cells' "
                                 "validation data"), overwrite=True)  # fmt: skip
    for r in resolved:
        if not (r.train_dir / MARKER).is_file():
            print(f"== {r.cell.name}: not trained yet, not evaluated ==", flush=True)
            continue
        if r.eval_data is not None:
            data = r.train_dir / EVAL_DATA_DIR / f"{VALIDATION}.jsonl"
            data.parent.mkdir(parents=True, exist_ok=True)
            data.write_text("".join(json.dumps(row, default=str) + "\n" for row in r.eval_data))
        print(f"== {r.cell.name}: evaluating into {r.eval_dir} ==", flush=True)
        for results in evaluate(eval_config(r, args)).values():
            print(format_summary(results), flush=True)


def run_experiment(kind: str, table: str, cells: list[Cell], arrows, args, rest: list[str]) -> list[dict]:
    """Validate every cell, then run the phases asked for; returns the table rows (none for a dry run)."""
    out = Path(args.output_dir)
    evaluating = args.phase in ("all", "eval") and not args.benchmarks and not args.dry_run
    if args.benchmarks:  # names and files checked now, not after hours of training
        from dler.eval.benchmarks import check_local_files, parse_benchmarks

        benchmarks = parse_benchmarks(args.benchmarks)
        if args.data_dir:
            check_local_files(benchmarks, args.data_dir)
    config = read_penalty_config(args.penalty_config)
    recipe = grid_recipe(args.recipe)
    if hasattr(recipe, "prepare") and not args.dry_run:
        recipe.prepare()  # the assets its defaults name (the tiny recipe's model and data): the cells read the data
    resolved = resolve(cells, args.recipe, rest, out, config, evaluating, dry_run=args.dry_run)
    if args.dry_run:
        for r in resolved:
            t = r.training
            print(json.dumps({"cell": r.cell.name, "penalty": t.penalty, "penalty_kwargs": t.penalty_kwargs,
                              "optimizer_recipe": t.optimizer_recipe, "advantage_normalization":
                              t.advantage_normalization, "epsilon_high": t.epsilon_high,
                              "dynamic_sampling": t.dynamic_sampling, "output_dir": t.output_dir}))  # fmt: skip
        return []
    record = experiment_record(kind, table, resolved, arrows, args, rest)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if _rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / EXPERIMENT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if args.phase in ("all", "train"):
        train_phase(resolved, args.recipe)
    if args.phase in ("all", "eval"):
        if world > 1:
            if args.phase == "eval":
                raise ValueError("--phase eval runs in one process (WORLD_SIZE=1): evaluation is not sharded")
            if _rank() == 0:
                print(
                    f"WORLD_SIZE={world}: cells trained, not evaluated; evaluate them in one process with this "
                    "command and --phase eval (`python <script> ... --phase eval`)",
                    flush=True,
                )
        else:
            eval_phase(resolved, args)
    if _rank() != 0:
        return []
    rows = write_table(out, record)
    print((out / f"{table}.md").read_text())
    print(f"report: dler report {out}")
    return rows


def main_guard(run, argv=None) -> Any:
    """A script's `__main__`: configuration errors as one line and exit 2 (`--traceback` shows the traceback)."""
    from dler.cpu_threads import for_cpu_run
    from dler.run_console import quiet_known_warnings

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--traceback" in argv or os.environ.get("DLER_DEBUG", "") not in ("", "0")
    quiet_known_warnings()
    cpu_threads = for_cpu_run(split_argv(argv)[1])  # the recipes' CPU policy (torch is loaded: threads only)
    if cpu_threads is not None and "--dry-run" not in argv:
        cpu_threads()
    try:
        return run([a for a in argv if a != "--traceback"])
    except (ValueError, TypeError, OSError, AttributeError) as error:
        if debug:
            raise
        print(f"error: {error}\n(add --traceback for the full traceback)", file=sys.stderr)
        raise SystemExit(2) from None
