"""`dler report OUT` on an experiment folder (it holds experiment.json): the usual report of every evaluated cell,
then the experiment's table and its accuracy-length plane (`plane.png`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dler.eval.plane_plot import plot_plane
from dler.eval.run_folders import ReportError
from dler.experiments.table import cell_rows, markdown, plane_data, read_experiment

TITLES = {
    "penalty_grid": "Penalty grid: each penalty under GRPO (o) and the DLER recipe (*), arrow GRPO -> DLER",
    "ablations": "Ablations: full DLER (*) and DLER minus one component (o), arrow full -> ablation",
}


def experiment_report(run_dirs: list, output, write_report: Callable[[list[Path], Path], Path], plots: bool = True):
    """When `run_dirs` is one experiment folder: `write_report(evaluated cells' eval dirs, output)` (default output
    OUT/report), then the table and the plane appended to its report.md; returns report.md's path. Otherwise None."""
    if len(run_dirs) != 1 or (experiment := read_experiment(run_dirs[0])) is None:
        return None
    folder = Path(run_dirs[0])
    rows = cell_rows(folder, experiment)
    evaluated = [folder / c["eval_dir"] for c, r in zip(experiment["cells"], rows, strict=True) if "eval_pass@1" in r]
    if not evaluated:
        raise ReportError(f"{folder}: no cell is evaluated yet; run the experiment's script with --phase eval")
    out = Path(output) if output is not None else folder / "report"
    path = write_report(evaluated, out)
    parts = ["", f"## Experiment: {experiment['kind']} ({len(evaluated)} of {len(rows)} cells evaluated)", "",
             markdown(rows)]  # fmt: skip
    if plots:
        points, arrows = plane_data(rows, experiment)
        title = f"{TITLES.get(experiment['kind'], experiment['kind'])}\nrecipe {experiment['recipe']}"
        plot_plane(points, arrows, out / "plane.png", title)
        parts += ["![plane](plane.png)", ""]
    path.write_text(path.read_text() + "\n".join(parts))
    return path
