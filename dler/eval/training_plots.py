"""Training curves for `dler report --training RUN_DIR`: the metrics a training run logged to `metrics.jsonl`
(`dler.run_logs.MetricsLog`) against step, in panels (rollout correctness, reward, length, over-budget fraction,
dynamic sampling's kept fraction, clip ratios, entropy, KL), each drawing the keys the run logged.

Reading the file: each line is `{"step": N, key: value, ...}`; a `{"event": "resume", "from_step": F}` marker (a
resumed run) drops what the lost run logged after step F, and within a step the last value logged wins (a run
resumed by an older dler replayed steps without dropping them). Non-numeric values and lines cut short by a kill
are skipped and counted; keys no panel draws are counted and listed in the report.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from dler.run_logs import METRICS_FILE

TRAINING_PNG = "training_metrics.png"
TRAINING_CSV = "training_metrics.csv"
KEPT = "groups_kept / groups_generated"  # derived: the share of generated groups dynamic sampling kept
_GROUP_COUNTS = ("kept", "all_zero", "all_positive", "unscorable")
NOT_METRICS = ("step", "epoch", "event")


@dataclass(frozen=True)
class Panel:
    """One panel: its title, y label, whether its values are fractions shown in %, and (key, legend label) pairs."""

    title: str
    ylabel: str
    percent: bool
    series: tuple[tuple[str, str], ...]


PANELS = (
    Panel("Rollout correctness", "% correct", True,
          (("dler/correctness", "training rollouts"), ("eval_dler/accuracy", "validation"))),
    Panel("Reward", "mean reward", False, (("dler/reward", "total"), ("dler/shaped_reward", "correctness shaped"))),
    Panel("Response length", "tokens", False,
          (("completions/mean_length", "mean"), ("completions/mean_terminated_length", "mean of those that ended"),
           ("dler/budget_mean", "length budget (mean)"), ("eval_dler/mean_length", "validation"))),
    Panel("Over budget / truncated", "% of rollouts", True,
          (("dler/over_budget_frac", "over the budget"), ("completions/clipped_ratio", "cut at max_completion_length"),
           ("eval_dler/truncated_frac", "validation: cut"))),
    Panel("Dynamic sampling", "% of groups kept", True,
          ((KEPT, "this step"), ("dynamic_sampling/kept_fraction", "running estimate"))),
    Panel("Clip ratios", "% of tokens", True,
          (("clip_ratio/low_mean", "low"), ("clip_ratio/high_mean", "high"), ("clip_ratio/region_mean", "either"))),
    Panel("Entropy", "nats per token", False, (("entropy", "policy entropy"),)),
    Panel("KL to the reference", "per token", False,
          (("kl", "k3 (TRL)"), ("dler/kl_k2", "k2"), ("dler/kl_low_var_kl", "low_var_kl"))),
)  # fmt: skip
DRAWN = {key for p in PANELS for key, _ in p.series} | {f"dynamic_sampling/groups_{c}" for c in _GROUP_COUNTS}


@dataclass
class TrainingLog:
    """A run's metrics: {key: {step: value}}, the steps it resumed from, and what was skipped reading it."""

    path: Path
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    resumes: list[int] = field(default_factory=list)
    bad_lines: int = 0
    non_numeric: int = 0

    @property
    def label(self) -> str:
        return self.path.parent.name

    def unknown_keys(self) -> list[str]:
        """Keys the run logged that no panel draws."""
        return sorted(k for k in self.series if k not in DRAWN)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_metrics(path: str | Path) -> TrainingLog:
    """Read a metrics.jsonl: a resume marker drops the steps after its `from_step`, the last value of a step wins,
    and the derived kept fraction of dynamic sampling is added where the group counts were logged."""
    log = TrainingLog(Path(path))
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            log.bad_lines += 1
            continue
        if not isinstance(entry, dict):
            log.bad_lines += 1
        elif entry.get("event") == "resume" and isinstance(entry.get("from_step"), int):
            start = entry["from_step"]
            log.resumes.append(start)
            for values in log.series.values():
                for step in [s for s in values if s > start]:
                    del values[step]
        elif isinstance(entry.get("step"), int):
            for key, value in entry.items():
                if key in NOT_METRICS:
                    continue
                number = _number(value)
                if number is None:
                    log.non_numeric += 1
                else:
                    log.series.setdefault(key, {})[entry["step"]] = number
        else:
            log.bad_lines += 1
    kept = kept_fraction(log.series)
    if kept:
        log.series[KEPT] = kept
    log.series = {k: v for k, v in log.series.items() if v}
    return log


def kept_fraction(series: dict[str, dict[int, float]]) -> dict[int, float]:
    """{step: groups kept / groups generated} of dynamic sampling: kept / (kept + all-zero + all-positive +
    unscorable), at the steps where all four counts were logged and some group was classified (dynamic sampling
    on)."""
    counts = [series.get(f"dynamic_sampling/groups_{c}", {}) for c in _GROUP_COUNTS]
    out = {}
    for step in sorted(set.intersection(*(set(c) for c in counts))):
        total = sum(c[step] for c in counts)
        if total > 0:
            out[step] = counts[0][step] / total
    return out


def read_training_runs(dirs: list[str | Path]) -> list[TrainingLog]:
    """The metrics.jsonl of each training run folder (or the file itself), with one clear error for a folder
    without one."""
    from dler.eval.run_folders import ReportError

    logs = []
    for d in map(Path, dirs):
        path = d if d.is_file() else d / METRICS_FILE
        if not path.is_file():
            raise ReportError(
                f"--training {d}: no {METRICS_FILE} there (training writes it into its output_dir on the first "
                "logging step)"
            )
        log = read_metrics(path)
        if not log.series:
            raise ReportError(f"--training {path}: no step with a numeric metric (the run logged nothing yet)")
        logs.append(log)
    return logs


def is_training_run(folder: str | Path) -> bool:
    """A training run's output_dir (it holds metrics.jsonl) and not an evaluation run (no results.json)."""
    from dler.eval.store import RESULTS_FILE, SCALING_FILE

    f = Path(folder)
    return (f / METRICS_FILE).is_file() and not any((f / name).is_file() for name in (RESULTS_FILE, SCALING_FILE))


def _label(log: TrainingLog, logs: list[TrainingLog]) -> str:
    return log.label if len({g.label for g in logs}) == len(logs) else str(log.path.parent)


def drawn_panels(logs: list[TrainingLog]) -> list[Panel]:
    """The panels with at least one key some run logged."""
    return [p for p in PANELS if any(key in log.series for log in logs for key, _ in p.series)]


def plot_training(logs: list[TrainingLog], path: str | Path):
    """One panel per group of logged metrics against step: with one run, a colour per key; with several, a colour
    per run and a line style per key. Resumes are dotted vertical lines. Returns the figure (or None: nothing)."""
    from matplotlib import colormaps

    from dler.eval.curves import step_axis
    from dler.eval.plot_style import figure_legend, panel_grid, percent_axis, save, style_axes

    panels = drawn_panels(logs)
    if not panels:
        return None
    from matplotlib.lines import Line2D

    several = len(logs) > 1
    fig, axes = panel_grid(len(panels), 4.2, 3.0, 0.6 + (0.25 * ((len(logs) + 2) // 3) if several else 0))
    cmap = colormaps["tab10"]
    styles = ("-", "--", ":", "-.")
    for ax, panel in zip(axes, panels, strict=True):
        scale = 100.0 if panel.percent else 1.0
        keys = []  # (name, style) of the keys drawn in this panel, for its legend
        for i, log in enumerate(logs):
            for j, (key, name) in enumerate(panel.series):
                values = log.series.get(key)
                if not values:
                    continue
                steps = sorted(values)
                color, style = (cmap(i % 10), styles[j % len(styles)]) if several else (cmap(j), "-")
                keys += [(name, style, color)] if name not in [k[0] for k in keys] else []
                ax.plot(steps, [values[s] * scale for s in steps], color=color, linestyle=style,
                        label=f"{_label(log, logs)}: {name}", marker="o" if len(steps) < 30 else None, ms=3,
                        lw=1.4)  # fmt: skip
            for step in log.resumes:
                ax.axvline(step, color="grey", linestyle=":", lw=1)
        style_axes(ax, panel.title, "training step", panel.ylabel)
        step_axis(ax, [step for log in logs for key, _ in panel.series for step in log.series.get(key, {})])
        if panel.percent:
            percent_axis(ax)
        handles = [Line2D([], [], color="dimgray" if several else c, linestyle=st, label=n) for n, st, c in keys]
        ax.legend(handles=handles, fontsize=8, frameon=False)
    title = f"Training metrics of {', '.join(_label(log, logs) for log in logs)}"
    if several:  # the runs by colour above the panels; each panel's legend names its keys by line style
        runs = [(Line2D([], [], color=cmap(i % 10), lw=2), _label(log, logs)) for i, log in enumerate(logs)]
        figure_legend(fig, [], extra=runs, ncol=3, title=title)
    else:
        fig.suptitle(title, fontsize=11)
    return save(fig, path)


def write_training_csv(logs: list[TrainingLog], path: Path) -> None:
    """The numbers drawn: one row per run, key and step."""
    drawn = [key for p in PANELS for key, _ in p.series]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["run", "key", "step", "value"])
        for log in logs:
            for key in drawn:
                for step, value in sorted(log.series.get(key, {}).items()):
                    writer.writerow([_label(log, logs), key, step, repr(value)])


def _fmt(value: float, percent: bool) -> str:
    return f"{100 * value:.1f}%" if percent else f"{value:.4g}"


def training_section(logs: list[TrainingLog], plot: Path | None) -> str:
    """report.md's "Training metrics" section: per run and key drawn, the first and last logged value and their
    steps; the resumes, and what was not drawn (counted)."""
    parts = ["## Training metrics", "", "From each run's metrics.jsonl (last value of a step wins; a resume drops "
             "the steps the lost run logged after its checkpoint).", "",
             "| run | panel | metric | key | steps logged | first (step) | last (step) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for log in logs:
        for p in PANELS:
            for key, name in p.series:
                values = log.series.get(key)
                if not values:
                    continue
                first, last = min(values), max(values)
                ends = f"{_fmt(values[first], p.percent)} ({first}) | {_fmt(values[last], p.percent)} ({last})"
                parts.append(f"| {_label(log, logs)} | {p.title} | {name} | `{key}` | {len(values)} | {ends} |")
    parts.append("")
    for log in logs:
        notes = []
        if log.resumes:
            notes.append(f"resumed at step {', '.join(map(str, log.resumes))}")
        unknown = log.unknown_keys()
        if unknown:
            shown = ", ".join(f"`{k}`" for k in unknown[:12]) + (", ..." if len(unknown) > 12 else "")
            notes.append(f"{len(unknown)} logged keys not drawn ({shown})")
        if log.bad_lines or log.non_numeric:
            notes.append(f"{log.bad_lines} unreadable lines and {log.non_numeric} non-numeric values skipped")
        if notes:
            parts.append(f"- {_label(log, logs)} ({log.path}): " + "; ".join(notes) + ".")
    parts.append("")
    if plot is not None:
        parts += [f"![training metrics]({plot.name})", ""]
    parts.append(f"The numbers drawn: [{TRAINING_CSV}]({TRAINING_CSV}).\n")
    return "\n".join(parts)


def write_training(dirs: list[str | Path], out: Path, report_path: Path, plots: bool = True) -> list[Path]:
    """Read the training runs' metrics.jsonl and add their section to report.md (created when missing, appended
    to otherwise), writing training_metrics.csv and (with `plots`) training_metrics.png into `out`."""
    logs = read_training_runs(dirs)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / TRAINING_CSV]
    write_training_csv(logs, written[0])
    plot = None
    if plots and plot_training(logs, out / TRAINING_PNG) is not None:
        plot = out / TRAINING_PNG
        written.append(plot)
    section = training_section(logs, plot)
    if report_path.is_file():
        with open(report_path, "a") as f:
            f.write("\n" + section)
    else:
        report_path.write_text("# Training report\n\n" + section)
    return written
