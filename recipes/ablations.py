"""DLER minus one component at a time, from one command: each cell is the full DLER cell with one setting changed,
same recipe, same seed, evaluated and tabulated like the penalty grid (OUT/ablations.json, OUT/ablations.md), and
`dler report OUT` draws the accuracy-length plane with an arrow from full DLER to each ablation.

Components (a component the recipe does not use is left out, saying why, e.g. dynamic sampling in the tiny recipe):
- no_batch_norm: advantage_normalization batch -> group (GRPO's per-group standardisation);
- no_clip_higher: epsilon_high -> epsilon (symmetric clip);
- no_dynamic_sampling: dynamic_sampling -> false;
- no_truncation_shaping: truncated_reward_scale -> 1.0 (an over-budget response keeps its correctness);
- released-<field>: each setting where the released code differs from the paper (dler.presets: truncated reward
  0.1, token-weighted whitening, filtering on raw correctness, low_var_kl, 384-prompt rounds, its grader), the
  released correct-sample advantage boost 0.1, and `released`: the whole released preset.

    python recipes/ablations.py                       # the tiny recipe, every component that applies
    python recipes/ablations.py --recipe recipes/dler_r1_1p5b.py --ablations no_batch_norm,no_clip_higher \
        --output_dir runs/ablations-1p5b --benchmarks aime24 -- --max_steps 400
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dler.experiments.cells import Cell, grid_recipe, recipe_runner
from dler.experiments.runner import add_experiment_args, main_guard, run_experiment, split_argv
from dler.presets import PRESETS

FULL = "dler"
RELEASED_BOOST = 0.1  # correct_sample_advantage_boost_value in one released script (DLER-REFERENCE.md)


def _flag(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def components(script, t) -> list[tuple[str, list[str], str | None]]:
    """(name, flags, why it does not apply or None) of every ablation, against the full cell's settings `t`."""
    ds = bool(t.dynamic_sampling)
    out = [
        ("no_batch_norm", ["--advantage_normalization", "group"],
         None if t.advantage_normalization == "batch" else f"advantage_normalization is {t.advantage_normalization}"),
        ("no_clip_higher", ["--epsilon_high", _flag(t.epsilon)],
         None if t.epsilon_high not in (None, t.epsilon) else "epsilon_high already equals epsilon"),
        ("no_dynamic_sampling", ["--dynamic_sampling", "false"], None if ds else "the recipe has dynamic_sampling off"),
        ("no_truncation_shaping", ["--truncated_reward_scale", "1.0"],
         None if t.penalty == "truncation" and t.truncated_reward_scale < 1 else "no truncation shaping to remove"),
    ]  # fmt: skip
    needs = {"prompts_per_round": ds, "dynamic_sampling_metric": ds, "kl_estimator": t.beta > 0}
    for name, (value, _) in PRESETS["released"].items():
        if PRESETS["paper"].get(name, (None,))[0] == value:
            continue
        why = None if needs.get(name, True) else f"{name} has no effect here (dynamic sampling off or beta 0)"
        if why is None and getattr(t, name, getattr(script, name, None)) == value:
            why = f"{name} is already {value!r}"
        out.append((f"released-{name}", [f"--{name}", _flag(value)], why))
    boost = None if t.correct_advantage_boost != RELEASED_BOOST else "correct_advantage_boost is already 0.1"
    out.append(("released-correct_advantage_boost", ["--correct_advantage_boost", _flag(RELEASED_BOOST)], boost))
    out.append(("released", ["--preset", "released"], None if script.preset != "released" else "preset is released"))
    return out


def ablation_cells(recipe_path: str, rest: list[str], out: str, penalty: str, wanted: list[str] | None):
    """The full DLER cell and one cell per applicable component (or per `wanted` one), arrows full -> ablation."""
    parse_cell, _ = recipe_runner(grid_recipe(recipe_path))
    probe = [*rest, "--optimizer_recipe", "dler", "--output_dir", str(Path(out) / FULL), "--penalty", penalty,
             "--dry-run"]  # fmt: skip
    script, training, _ = parse_cell(probe if hasattr(grid_recipe(recipe_path), "DEFAULTS") else probe[:-1])
    found = components(script, training)
    known = [name for name, _, _ in found]
    unknown = sorted(set(wanted or []) - set(known))
    if unknown:
        raise ValueError(f"--ablations: unknown {unknown}; known: {', '.join(known)}")
    cells = [Cell(FULL, penalty, "dler", description="full DLER recipe", role="full")]
    for name, flags, why in found:
        if wanted is not None and name not in wanted:
            continue
        if why is not None:
            if wanted is not None:
                raise ValueError(f"--ablations {name}: does not apply to this recipe ({why})")
            print(f"ablation {name} left out: {why}")
            continue
        cells.append(Cell(name, penalty, "dler", flags, description=f"DLER with {' '.join(flags)}", role="ablation"))
    return cells, [(FULL, c.name) for c in cells[1:]]


def main(argv=None) -> list[dict]:
    ours, rest = split_argv(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablations", default=None, help="comma-separated components [every one that applies]")
    parser.add_argument("--penalty", default="truncation", help="the length penalty of every cell")
    add_experiment_args(parser, "runs/ablations")
    args = parser.parse_args(ours)
    wanted = args.ablations.split(",") if args.ablations else None
    cells, arrows = ablation_cells(args.recipe, rest, args.output_dir, args.penalty, wanted)
    return run_experiment("ablations", "ablations", cells, arrows, args, rest)


if __name__ == "__main__":
    main_guard(main)
