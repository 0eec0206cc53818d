"""The length figures of `dler report`: mean length by correctness, budget curves (accuracy if every response
were cut at B tokens) and length histograms of correct and incorrect samples by problem difficulty."""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

from dler.eval.graded import combined_se
from dler.eval.plot_style import (
    TICK_FONT,
    benchmark_panels,
    figure_legend,
    log2_axis,
    new_figure,
    panel_grid,
    percent_axis,
    run_colors,
    run_line,
    save,
    se_band,
    style_axes,
    thousands,
    tokens_axis,
    tokens_label,
)
from dler.eval.run_folders import Run, benchmark_columns, display_name, with_results

DIFFICULTIES = ("easy", "medium", "hard")


def plot_length_by_correctness(runs: list[Run], path: Path, baseline: Run | None = None):
    """Mean length of correct and incorrect samples, side by side per run, per benchmark and overall."""
    runs = with_results(runs)
    panels = benchmark_panels(benchmark_columns(runs))
    fig, axes = panel_grid(len(panels), 4.4, 3.8, 0.5)
    width = 0.38
    for ax, name in zip(axes, panels, strict=True):
        xs = list(range(len(runs)))
        correct, incorrect = [], []
        for r in runs:
            m = r.results["overall"] if name == "overall" else r.benchmarks.get(name, {})
            correct.append(m.get("mean_length_correct") or 0.0)
            incorrect.append(m.get("mean_length_incorrect") or 0.0)
        ax.bar([x - width / 2 for x in xs], correct, width, label="correct", color="tab:green")
        ax.bar([x + width / 2 for x in xs], incorrect, width, label="incorrect", color="tab:red")
        ax.set_xticks(xs)
        ax.set_xticklabels([display_name(r, baseline) for r in runs], rotation=25, ha="right", fontsize=8)
        ax.set_title(name, fontsize=11)
        ax.set_ylabel("mean length (tokens)", fontsize=10)
        thousands(ax)
        ax.tick_params(axis="y", labelsize=TICK_FONT)
        ax.grid(alpha=0.3, axis="y")
    figure_legend(fig, axes)
    return save(fig, path)


def _budget_curve(r: Run, panel: str, cols: list[str]):
    """(budgets, accuracy %, se % or None) of one benchmark, or averaged over the benchmarks ("overall") at every
    budget where each benchmark's accuracy is known: one of its budgets, or past its last budget (its longest
    response: nothing is cut any more, the accuracy stays at its last value)."""
    if panel != "overall":
        c = r.benchmarks.get(panel, {}).get("budget_curve")
        if not c or not c.get("budgets"):
            return None
        se = c.get("accuracy_se")
        return list(c["budgets"]), [100 * a for a in c["accuracy"]], None if not se else [None if s is None else 100 * s for s in se]  # fmt: skip
    curves = [r.benchmarks[b].get("budget_curve") for b in cols if b in r.benchmarks]
    if not curves or any(not c or not c.get("budgets") for c in curves):
        return None

    def at(c: dict, b: float, key: str) -> float | None:
        values = c.get(key)
        if not values:
            return None
        budgets = list(c["budgets"])
        if b in budgets:
            return values[budgets.index(b)]
        return values[-1] if b > budgets[-1] else None

    out_b, out_a, out_s = [], [], []
    for b in sorted({b for c in curves for b in c["budgets"]}):
        acc = [at(c, b, "accuracy") for c in curves]
        if any(a is None for a in acc):
            continue
        out_b.append(b)
        out_a.append(100 * sum(acc) / len(acc))
        se = combined_se([at(c, b, "accuracy_se") for c in curves])
        out_s.append(None if se is None else 100 * se)
    if not out_b:
        return None
    return out_b, out_a, None if any(x is None for x in out_s) else out_s


def has_budget_curves(runs: list[Run]) -> bool:
    """Whether some run holds a budget curve (results.json of older runs do not)."""
    return any(_has_budget_curve(r) for r in runs)


def _has_budget_curve(r: Run) -> bool:
    return any(m.get("budget_curve") for m in r.benchmarks.values())


def plot_budget_curves(runs: list[Run], path: Path, baseline: Run | None = None):
    """Accuracy when every response is cut at B tokens, against B: one line per run, ± se band."""
    colors = run_colors(runs)
    runs = [r for r in with_results(runs) if _has_budget_curve(r)]
    cols = benchmark_columns(runs)
    panels = benchmark_panels(cols)
    fig, axes = panel_grid(len(panels), 4.4, 3.5, 0.6)
    for ax, name in zip(axes, panels, strict=True):
        xs: list[float] = []
        ends = []
        for r in runs:
            curve = _budget_curve(r, name, cols)
            if curve is None:
                continue
            budgets, acc, se = curve
            xs += budgets
            run_line(ax, budgets, acc, colors[id(r)], r, baseline)
            se_band(ax, budgets, acc, se, colors[id(r)])
            ends.append((budgets[-1], acc[-1], colors[id(r)]))
        for last, y, color in ends:  # past its longest response a run's accuracy no longer changes
            if xs and last < max(xs):
                ax.plot([last, max(xs)], [y, y], color=color, linestyle=":", linewidth=1.2, label="_nolegend_")
        positive = [x for x in xs if x > 0]
        if positive and len(positive) == len(xs) and max(xs) / min(xs) >= 4:
            log2_axis(ax, xs, tokens_label)
        else:
            tokens_axis(ax)
        style_axes(ax, name + ("" if xs else " (no budget curve)"), "token budget B", "accuracy (%)")
        percent_axis(ax)
    figure_legend(fig, axes, title="accuracy if every response were cut at B tokens (± se; dotted: past a run's "
                   "longest response)")  # fmt: skip
    return save(fig, path)


def has_length_histograms(runs: list[Run]) -> bool:
    """Whether some run holds a length histogram (results.json of older runs do not)."""
    return any(m.get("length_histogram") for r in runs for m in r.benchmarks.values())


def _rebin(counts: list[int], edges: list[float], new_edges: list[float]) -> list[int]:
    """Counts of one histogram moved onto other bin edges: each bin's samples go whole to the new bin holding the
    bin's midpoint, so the counts stay whole numbers of samples (a sample moves by at most half its old bin)."""
    out = [0] * (len(new_edges) - 1)
    for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        if c:
            j = bisect.bisect_right(new_edges, (lo + hi) / 2) - 1
            out[min(max(j, 0), len(out) - 1)] += int(c)
    return out


def _histogram(r: Run) -> tuple[list[float], dict[str, dict[str, Any]], list[str]] | None:
    """A run's length histograms pooled over its benchmarks: each benchmark's counts (its own equal-width bins,
    `lengths.length_histogram`) moved onto one set of edges spanning all of them (`_rebin`: whole samples).
    Returns (edges, {"all" / difficulty: {"correct": counts, "incorrect": counts, "problems": int}}, benchmarks)."""
    hists = {
        b: m["length_histogram"] for b, m in r.benchmarks.items() if (m.get("length_histogram") or {}).get("edges")
    }
    if not hists:
        return None
    lo = min(h["edges"][0] for h in hists.values())
    hi = max(h["edges"][-1] for h in hists.values())
    bins = max(len(h["edges"]) - 1 for h in hists.values())
    first = next(iter(hists.values()))["edges"]
    if all(list(h["edges"]) == list(first) for h in hists.values()):
        edges = [float(e) for e in first]
    else:
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)] if hi > lo else [lo, lo + 1.0]
    groups: dict[str, dict[str, Any]] = {}
    for h in hists.values():
        parts = [("all", h)] + [(d, h[d]) for d in DIFFICULTIES if isinstance(h.get(d), dict)]
        for name, part in parts:
            g = groups.setdefault(name, {})
            if part.get("problems") is not None:
                g["problems"] = g.get("problems", 0) + part["problems"]
            for key in ("correct", "incorrect"):
                counts = part.get(key)
                if counts is not None and len(counts) == len(h["edges"]) - 1:
                    spread = _rebin(counts, list(h["edges"]), edges)
                    g[key] = [a + b for a, b in zip(g.get(key, [0] * len(spread)), spread, strict=True)]
    return edges, groups, list(hists)


def plot_length_histograms(runs: list[Run], path: Path, baseline: Run | None = None):
    """Response lengths of correct and incorrect samples, one row per run (its benchmarks pooled): all problems,
    then by difficulty (easy: solved in >= 2/3 of the samples, hard: <= 1/3, as `lengths.length_histogram`)."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    hists = [(r, h) for r in with_results(runs) if (h := _histogram(r)) is not None]
    columns = ["all"] + [d for d in DIFFICULTIES if any(d in h[1] for _, h in hists)]
    fig = new_figure(3.8 * len(columns), 2.9 * len(hists) + 0.6)
    axes = []
    for i, (r, (edges, groups, _)) in enumerate(hists):
        for j, name in enumerate(columns):
            ax = fig.add_subplot(len(hists), len(columns), i * len(columns) + j + 1)
            axes.append(ax)
            g = groups.get(name, {})
            for key, color in (("correct", "tab:green"), ("incorrect", "tab:red")):
                if key in g:
                    ax.stairs(g[key], edges, fill=True, alpha=0.45, color=color)
                    ax.stairs(g[key], edges, color=color, linewidth=1.2)
            if not any(any(g.get(key) or []) for key in ("correct", "incorrect")):
                ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center", va="center", fontsize=10,
                        color="grey")  # fmt: skip
                ax.set_yticks([])
            what = "all problems" if name == "all" else f"{name} problems"
            if g.get("problems") is not None and name != "all":
                what += f" ({g['problems']})"
            title = f"{display_name(r, baseline)}: {what}"
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("response length (tokens)", fontsize=9)
            ax.set_ylabel("samples", fontsize=9)
            tokens_axis(ax)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # whole samples: no 0.5 ticks on small counts
            ax.set_ylim(bottom=0)
            ax.set_xlim(edges[0], edges[-1])
            style_axes(ax)
    extra = [(Patch(color="tab:green", alpha=0.6), "correct"), (Patch(color="tab:red", alpha=0.6), "incorrect")]
    figure_legend(fig, [], extra, title="response lengths, each run's benchmarks pooled; easy problems: solved "
                   "in >= 2/3 of the samples, hard: <= 1/3; (n): problems")  # fmt: skip
    return save(fig, path)
