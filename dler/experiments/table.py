"""An experiment's table and plane data: train-end metrics from each cell's marker, evaluation metrics from its
`eval/results.json`; written as `<table>.json` and `<table>.md` in the experiment folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXPERIMENT_FILE = "experiment.json"
TRAIN_METRICS = ("dler/correctness", "dler/shaped_reward", "completions/mean_length", "dler/over_budget_frac")
EVAL_METRICS = ("pass@1", "pass@1_se", "mean_length", "truncation_rate")


def final_metrics(log_history: list[dict]) -> dict:
    """The last logged value of each train-end metric."""
    out = {}
    for entry in log_history:
        out.update({k: entry[k] for k in TRAIN_METRICS if k in entry})
    return out


def read_experiment(folder: str | Path) -> dict[str, Any] | None:
    """The experiment.json of `folder` (None if it has none)."""
    path = Path(folder) / EXPERIMENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def cell_rows(folder: str | Path, experiment: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per cell: its description, train-end metrics (once trained) and overall eval metrics (once
    evaluated; `eval_*` keys, pass@1 as a fraction)."""
    folder = Path(folder)
    rows = []
    for cell in experiment["cells"]:
        marker = _json(folder / cell["train_dir"] / "experiment_cell.json") or {}
        results = _json(folder / cell["eval_dir"] / "results.json")
        row = {k: cell[k] for k in ("name", "penalty", "optimizer_recipe", "role", "description", "penalty_kwargs")}
        row.update(marker.get("metrics", {}))
        row["trained"] = bool(marker)
        if results is not None:
            overall = results["overall"]
            row.update({f"eval_{k}": overall.get(k) for k in EVAL_METRICS})
            row["eval_benchmarks"] = list(results["benchmarks"])
            row["eval_n"] = results["protocol"]["sampling"]["n"]
        rows.append(row)
    return rows


def _number(value: Any, fmt: str = "{:.4g}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table: cell, penalty, recipe, eval accuracy ± se, mean length, truncation rate, then train-end metrics."""
    head = ["cell", "penalty", "recipe", "pass@1 (%) ± se", "mean length", "truncated (%)", *TRAIN_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        acc = "-" if r.get("eval_pass@1") is None else f"{100 * r['eval_pass@1']:.2f}"
        if r.get("eval_pass@1_se") is not None:
            acc += f" ± {100 * r['eval_pass@1_se']:.2f}"
        trunc = None if r.get("eval_truncation_rate") is None else 100 * r["eval_truncation_rate"]
        cells = [r["name"], r["penalty"], r["optimizer_recipe"], acc, _number(r.get("eval_mean_length"), "{:.1f}"),
                 _number(trunc, "{:.1f}"), *(_number(r.get(k)) for k in TRAIN_METRICS)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(folder: str | Path, experiment: dict[str, Any]) -> list[dict[str, Any]]:
    """`<table>.json` and `<table>.md` in the experiment folder; returns the rows."""
    folder = Path(folder)
    rows = cell_rows(folder, experiment)
    (folder / f"{experiment['table']}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (folder / f"{experiment['table']}.md").write_text(markdown(rows))
    return rows


def plane_data(rows: list[dict[str, Any]], experiment: dict[str, Any]) -> tuple[list[dict], list[tuple[str, str]]]:
    """The evaluated cells as plane points (x mean length, y pass@1 in %, se in %) and the arrows between them."""
    points = [
        {"name": r["name"], "group": r["penalty"] if experiment["kind"] == "penalty_grid" else r["name"],
         "role": r["role"], "x": r["eval_mean_length"], "y": 100 * r["eval_pass@1"],
         "se": None if r.get("eval_pass@1_se") is None else 100 * r["eval_pass@1_se"]}
        for r in rows if r.get("eval_pass@1") is not None
    ]  # fmt: skip
    have = {p["name"] for p in points}
    arrows = [(a, b) for a, b in experiment.get("arrows", []) if a in have and b in have]
    return points, arrows
