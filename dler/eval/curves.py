"""Curves over training for `dler report`: the run folders of a checkpoint sweep (`dler eval --checkpoints`,
`dler.eval.checkpoints`) give accuracy (pass@1 ± se), mean length and truncation rate against training step, one
line per benchmark (and their average), one line style per sweep when several are reported together.

`write_curves` adds to the report: `curves.png` (the three panels), `curves.csv` (the numbers drawn, one row per
sweep, step and benchmark) and a "Curves over training" section in report.md with one row per step.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from dler.eval.checkpoints import SWEEP_FILE, read_step
from dler.eval.plot_style import figure_legend, percent_axis, save, se_band, style_axes, thousands
from dler.eval.run_folders import Run, benchmark_columns

CURVES_PNG = "curves.png"
CURVES_CSV = "curves.csv"
OVERALL = "overall"
_STYLES = ("-", "--", ":", "-.")
# (panel title, y label, results key, its standard error key or None, shown in %)
PANELS = (
    ("Accuracy", "pass@1 (%)", "pass@1", "pass@1_se", True),
    ("Mean length", "tokens", "mean_length", None, False),
    ("Truncation rate", "truncated (%)", "truncation_rate", None, True),
)
CSV_COLUMNS = ("sweep", "step", "benchmark", "pass@1", "pass@1_se", "mean_length", "truncation_rate")


@dataclass
class Sweep:
    """The evaluated checkpoints of one training run: (step, run folder) oldest first, under a label."""

    label: str
    folder: Path
    points: list[tuple[int, Run]]


def find_sweeps(runs: list[Run]) -> list[Sweep]:
    """The runs that are checkpoints of a sweep, grouped by sweep (the folder holding checkpoints.json), each
    sorted by step; a sweep folder is labelled by its name, or by its shortest distinct path."""
    groups: dict[Path, list[tuple[int, Run]]] = {}
    for r in runs:
        step = read_step(r.path)
        if step is None or r.results is None:
            continue
        folder = next((p for p in (r.path.parent, r.path.parent.parent) if (p / SWEEP_FILE).is_file()), r.path.parent)
        groups.setdefault(folder.resolve(), []).append((step, r))
    folders = list(groups)
    depth = 1
    while len({"/".join(f.parts[-depth:]) for f in folders}) < len(folders) and depth < 8:
        depth += 1
    return [
        Sweep("/".join(f.parts[-depth:]), f, sorted(groups[f], key=lambda point: point[0]))
        for f in folders  # fmt: skip
    ]


def sweep_benchmarks(sweeps: list[Sweep]) -> list[str]:
    """The benchmarks of every checkpoint, in paper order, and "overall" when there are several."""
    cols = benchmark_columns([r for s in sweeps for _, r in s.points])
    return [*cols, OVERALL] if len(cols) > 1 else cols


def _metrics(r: Run, benchmark: str) -> dict | None:
    if benchmark == OVERALL:
        return (r.results or {}).get("overall")
    return r.benchmarks.get(benchmark)


def curve_rows(sweeps: list[Sweep]) -> list[dict]:
    """One row per sweep, step and benchmark (fractions as results.json holds them; None where missing)."""
    rows = []
    for s in sweeps:
        for step, r in s.points:
            for b in sweep_benchmarks(sweeps):
                m = _metrics(r, b)
                if m is None:
                    continue
                rows.append({"sweep": s.label, "step": step, "benchmark": b,
                             **{k: m.get(k) for k in CSV_COLUMNS[3:]}})  # fmt: skip
    return rows


def curve(rows: list[dict], sweep: str, benchmark: str, key: str, scale: float = 1.0) -> tuple[list, list]:
    """(steps, values x scale) of one line, the steps where the value is known."""
    pts = [(r["step"], r[key] * scale) for r in rows if r["sweep"] == sweep and r["benchmark"] == benchmark
           and r.get(key) is not None]  # fmt: skip
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(sweeps: list[Sweep], path: str | Path):
    """Accuracy (± se band), mean length and truncation rate against training step: one colour per benchmark (the
    average in black), one line style per sweep. Returns the figure (its Axes hold the data drawn)."""
    from matplotlib import colormaps

    from dler.eval.plot_style import panel_grid

    rows = curve_rows(sweeps)
    benchmarks = sweep_benchmarks(sweeps)
    fig, axes = panel_grid(len(PANELS), 4.6, 3.4, 0.4 + 0.25 * ((len(benchmarks) * len(sweeps) + 2) // 3))
    cmap = colormaps["tab10"]
    colors = {b: ("black" if b == OVERALL else cmap(i % 10)) for i, b in enumerate(benchmarks)}
    for ax, (title, ylabel, key, se_key, percent) in zip(axes, PANELS, strict=True):
        scale = 100.0 if percent else 1.0
        for i, s in enumerate(sweeps):
            for b in benchmarks:
                xs, ys = curve(rows, s.label, b, key, scale)
                if not xs:
                    continue
                label = b if len(sweeps) == 1 else f"{s.label}: {b}"
                ax.plot(xs, ys, color=colors[b], linestyle=_STYLES[i % len(_STYLES)], marker="o",
                        ms=3.5, lw=2.0 if b == OVERALL else 1.4, label=label, clip_on=False)  # fmt: skip
                if se_key is not None:
                    se_xs, ses = curve(rows, s.label, b, se_key, scale)
                    if se_xs == xs:
                        se_band(ax, xs, ys, ses, colors[b], alpha=0.12)
        style_axes(ax, title, "training step", ylabel)
        step_axis(ax, [step for s in sweeps for step, _ in s.points])
        if percent:
            percent_axis(ax)
        elif ax.get_ylim()[1] >= 1000:
            thousands(ax)
    figure_legend(fig, axes, ncol=3, title=f"Checkpoints of {run_names(sweeps)}, evaluated")
    return save(fig, path)


def step_axis(ax, steps) -> None:
    """Training steps on the x axis: a tick at each step when there are few, else whole-number ticks."""
    from matplotlib.ticker import MaxNLocator

    steps = sorted(set(steps))
    if 1 < len(steps) <= 12:
        ax.set_xticks(steps)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def run_names(sweeps: list[Sweep]) -> str:
    """The training runs the sweeps evaluated (their folder names, from checkpoints.json), for the figure's title."""
    import json

    names = []
    for s in sweeps:
        try:
            names.append(Path(json.loads((s.folder / SWEEP_FILE).read_text())["run_dir"]).name)
        except (OSError, ValueError, KeyError, TypeError):
            names.append(s.label)
    return ", ".join(dict.fromkeys(names))


def _cell(m: dict | None) -> str:
    if not m or m.get("pass@1") is None:
        return "-"
    se = f" ± {100 * m['pass@1_se']:.1f}" if m.get("pass@1_se") is not None else ""
    length = f"{m['mean_length']:,.0f} tok" if m.get("mean_length") is not None else "? tok"
    trunc = f"{100 * m['truncation_rate']:.1f}% cut" if m.get("truncation_rate") is not None else ""
    return f"{100 * m['pass@1']:.1f}{se} · {length} · {trunc}".rstrip(" ·")


def curves_table(sweeps: list[Sweep]) -> str:
    """One row per step: pass@1 % ± se, mean length and truncation rate per benchmark (and overall)."""
    benchmarks = sweep_benchmarks(sweeps)
    head = (["sweep"] if len(sweeps) > 1 else []) + ["step", "model", *benchmarks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sweeps:
        for step, r in s.points:
            cells = [s.label] if len(sweeps) > 1 else []
            cells += [str(step), f"`{Path(r.model).name}`"] + [_cell(_metrics(r, b)) for b in benchmarks]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_curves_csv(sweeps: list[Sweep], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(curve_rows(sweeps))


def write_curves(runs: list[Run], out: Path, report_path: Path, plots: bool = True) -> list[Path]:
    """For the runs that are checkpoints of a sweep: append the "Curves over training" section to report.md,
    write curves.csv and (with `plots`) curves.png into `out`. Returns the files written (none: no sweep)."""
    sweeps = find_sweeps(runs)
    if not sweeps:
        return []
    written = [out / CURVES_CSV]
    write_curves_csv(sweeps, written[0])
    parts = ["## Curves over training", "",
             "pass@1 % ± se · mean length · truncation rate of each checkpoint (`dler eval --checkpoints`).", "",
             curves_table(sweeps)]  # fmt: skip
    if plots:
        written.append(out / CURVES_PNG)
        plot_curves(sweeps, written[-1])
        parts += [f"![curves]({CURVES_PNG})", ""]
    parts.append(f"The numbers drawn: [{CURVES_CSV}]({CURVES_CSV}).\n")
    with open(report_path, "a") as f:
        f.write("\n" + "\n".join(parts))
    return written
