"""The figures of `dler report`: accuracy vs length, pass@k curves and the pass@k boundary view (log k, base vs
RL), maj@k vs tokens spent (parallel thinking) and Pass@K vs latency (test-time scaling); `write_plots` writes
them and the length figures of `dler.eval.length_plots`, each run in the same colour throughout."""

from __future__ import annotations

import math
from pathlib import Path

from dler.eval.graded import combined_se, standard_error
from dler.eval.length_plots import (
    has_budget_curves,
    has_length_histograms,
    plot_budget_curves,
    plot_length_by_correctness,
    plot_length_histograms,
)
from dler.eval.metrics import pass_at_k
from dler.eval.plot_style import (
    benchmark_panels,
    figure_legend,
    line_style,
    log2_axis,
    log10_axis,
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
from dler.eval.run_folders import Run, benchmark_columns, display_name, in_paper_order, scaling_rows, with_results

# always written (when some run has results.json)
PLOTS = (
    "accuracy_vs_length.png",
    "pass_at_k.png",
    "pass_at_k_boundary.png",
    "length_by_correctness.png",
    "parallel_thinking.png",
)
# written when some run holds the data they need
OPTIONAL_PLOTS = ("budget_curves.png", "length_histograms.png", "test_time_scaling.png")


def _pass_at_k_se(r: Run, benchmark: str, ks: list[int]) -> list[float | None] | None:
    """se over problems of pass@k per k: from results' `pass@k_se` if present, else from the per-problem CSV."""
    m = r.benchmarks.get(benchmark, {})
    given = m.get("pass@k_se")
    if isinstance(given, dict):
        return [given.get(str(k)) for k in ks]
    rows = r.per_problem(benchmark)
    if not rows or len(rows) < 2:
        return None
    out: list[float | None] = []
    for k in ks:
        vals = []
        for samples, mean in rows.values():
            if samples < k:
                return None
            vals.append(pass_at_k(samples, round(mean * samples), k))
        out.append(standard_error(vals))
    return out


def _pass_at_k_curve(r: Run, panel: str, cols: list[str]) -> tuple[list[int], list[float], list[float | None] | None]:
    """(ks, pass@k in %, se in % or None) of one benchmark, or of the average over `cols` for "overall"."""
    if panel != "overall":
        m = r.benchmarks[panel]
        ks = sorted(int(k) for k in m["pass@k"])
        se = _pass_at_k_se(r, panel, ks)
        return (
            ks,
            [100 * m["pass@k"][str(k)] for k in ks],
            None if se is None else [None if s is None else 100 * s for s in se],
        )
    have = [b for b in cols if b in r.benchmarks]
    ks = sorted(set.intersection(*(set(int(k) for k in r.benchmarks[b]["pass@k"]) for b in have)))
    ys = [100 * sum(r.benchmarks[b]["pass@k"][str(k)] for b in have) / len(have) for k in ks]
    per = [_pass_at_k_se(r, b, ks) for b in have]
    if any(p is None for p in per):
        return ks, ys, None
    ses = [combined_se([p[i] for p in per]) for i in range(len(ks))]
    return ks, ys, [None if s is None else 100 * s for s in ses]


def plot_accuracy_vs_length(runs: list[Run], path: Path, baseline: Run | None = None):
    """Every run's per-benchmark points (small, by marker) and its average (large, with ± se); runs are told apart
    by colour in the legend (no text labels at the points, which overlap for close runs)."""
    from matplotlib.lines import Line2D

    colors = run_colors(runs)
    runs = with_results(runs)
    cols = benchmark_columns(runs)
    markers = "sD^vP*Xh<>"
    fig = new_figure(8.5, 6.2)
    ax = fig.add_subplot(1, 1, 1)
    for r in runs:
        color, base = colors[id(r)], baseline is not None and r is baseline
        for j, b in enumerate(cols):
            if b in r.benchmarks:
                m = r.benchmarks[b]
                se = m.get("pass@1_se")
                ax.errorbar(m["mean_length"], 100 * m["pass@1"], yerr=None if se is None else 100 * se, color=color,
                            marker=markers[j % len(markers)], ms=6, alpha=0.55, linestyle="none", capsize=2,
                            markerfacecolor="none" if base else color)  # fmt: skip
        x, y, se = r.avg("mean_length", cols), r.avg("pass@1", cols), r.avg_se("pass@1", cols)
        ax.errorbar(x, 100 * y, yerr=None if se is None else 100 * se, color=color, marker="o", ms=11,
                    markeredgecolor=color if base else "black", markerfacecolor="white" if base else color,
                    markeredgewidth=2.5 if base else 1.5,
                    ecolor="black", elinewidth=1.2, linestyle="none", capsize=4, zorder=3,
                    label=display_name(r, baseline))  # fmt: skip
    thousands(ax, "x")
    style_axes(ax, "Accuracy vs length (large: average over benchmarks, ± se; small: one benchmark)",
               "mean response length (tokens)", "pass@1 (%)")  # fmt: skip
    lo, hi = ax.get_xlim()
    ax.set_xlim(max(0.0, lo), hi)
    percent_axis(ax)
    figure_legend(fig, [ax], title="runs (hollow: baseline)" if baseline is not None else "runs")
    if len(cols) > 1:
        marks = [
            (Line2D([], [], color="grey", marker=markers[j % len(markers)], linestyle="none", ms=6), b)
            for j, b in enumerate(cols)
        ]
        figure_legend(fig, [], marks, ncol=1, loc="outside right upper", title="benchmarks")
    return save(fig, path)


def plot_pass_at_k(runs: list[Run], path: Path, baseline: Run | None = None):
    """pass@k per benchmark and overall, ± se bands where the runs have per-problem data; ticks 1, 2, 4, ..., n."""
    colors = run_colors(runs)
    runs = with_results(runs)
    cols = benchmark_columns(runs)
    panels = benchmark_panels(cols)
    fig, axes = panel_grid(len(panels), 4.4, 3.5, 0.6)
    for ax, name in zip(axes, panels, strict=True):
        all_ks: list[int] = []
        for r in runs:
            if name != "overall" and name not in r.benchmarks:
                continue
            ks, ys, se = _pass_at_k_curve(r, name, cols)
            if not ks:
                continue
            all_ks += ks
            run_line(ax, ks, ys, colors[id(r)], r, baseline)
            se_band(ax, ks, ys, se, colors[id(r)])
        if all_ks:
            log2_axis(ax, all_ks)
        style_axes(ax, name, "k", "pass@k (%)")
        percent_axis(ax)
    figure_legend(fig, axes)
    return save(fig, path)


def _crossover(ks: list[int], rl: list[float], base: list[float]) -> float | None:
    """The k (interpolated in log k) where the base model's pass@k catches up with the RL model's."""
    for i in range(1, len(ks)):
        d0, d1 = rl[i - 1] - base[i - 1], rl[i] - base[i]
        if d0 > 0 and d1 <= 0:
            f = d0 / (d0 - d1)
            return 2 ** (math.log2(ks[i - 1]) + f * (math.log2(ks[i]) - math.log2(ks[i - 1])))
    return None


def plot_pass_at_k_boundary(runs: list[Run], path: Path, baseline: Run | None = None):
    """The boundary view (does RL shrink the set of problems solved at large k?): overall pass@k of every run on
    one log-k axis, the base model dashed, and where the base model catches up with an RL model."""
    colors = run_colors(runs)
    runs = with_results(runs)
    cols = benchmark_columns(runs)
    fig = new_figure(8.5, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    all_ks: list[int] = []
    base_curve = _pass_at_k_curve(baseline, "overall", cols)[:2] if baseline is not None and baseline in runs else None
    for r in runs:
        color = colors[id(r)]
        ks, ys, se = _pass_at_k_curve(r, "overall", cols)
        all_ks += ks
        label = display_name(r, baseline)
        if base_curve is not None and r is not baseline:
            bks, bys = base_curve
            shared = [k for k in ks if k in bks]
            k_x = _crossover(shared, [ys[ks.index(k)] for k in shared], [bys[bks.index(k)] for k in shared])
            if k_x is not None:
                label += f": baseline catches up at k≈{k_x:.0f}"
                ax.axvline(k_x, color=color, linestyle=":", linewidth=1.2)
        ax.plot(ks, ys, marker="o", ms=7 if len(ks) == 1 else 4, color=color, label=label, linewidth=2,
                **line_style(r, baseline))  # fmt: skip
        se_band(ax, ks, ys, se, color)
    if all_ks:
        log2_axis(ax, all_ks)
    what = "average over benchmarks" if len(cols) > 1 else cols[0]
    style_axes(ax, f"pass@k boundary: base vs RL models ({what})", "k (samples per problem, log scale)",
               f"pass@k (%), {what}")  # fmt: skip
    percent_axis(ax)
    figure_legend(fig, [ax], ncol=2)
    return save(fig, path)


def plot_parallel_thinking(runs: list[Run], path: Path, baseline: Run | None = None):
    """maj@k against the tokens spent on k samples and against their parallel latency; points labelled with k."""
    colors = run_colors(runs)
    runs = with_results(runs)
    fig = new_figure(12, 5.2)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    texts = []
    xs1 = []
    for r in runs:
        color = colors[id(r)]
        points = r.results["overall"].get("parallel_thinking") or []
        if not points:
            continue
        acc = [100 * p["maj@k"] for p in points]
        run_line(ax1, [p["total_tokens"] for p in points], acc, color, r, baseline)
        run_line(ax2, [p["latency_tokens"] for p in points], acc, color, r, baseline, label=False)
        xs1 += [p["total_tokens"] for p in points]
        for p, y in zip(points, acc, strict=True):
            texts.append(ax1.annotate(f"{p['k']}", (p["total_tokens"], y), textcoords="offset points", xytext=(-4, 4),
                                      ha="right", fontsize=8, color=color))  # fmt: skip
    if xs1:
        log2_axis(ax1, [x for x in xs1 if x > 0] or [1.0], tokens_label)
    tokens_axis(ax2)
    style_axes(ax1, "Majority vote vs tokens spent", "tokens per problem: k x mean length (point labels: k)",
               "maj@k (%)")  # fmt: skip
    style_axes(ax2, "Majority vote vs latency", "parallel latency: longest of the k samples (tokens)", "maj@k (%)")
    for ax in (ax1, ax2):
        percent_axis(ax)
    figure_legend(fig, [ax1, ax2])
    return save(fig, path, texts)


def plot_test_time_scaling(runs: list[Run], path: Path, baseline: Run | None = None):
    """Pass@K against latency (log x), one line per model and panel per benchmark, points labelled with K."""
    colors = run_colors(runs)
    runs = [r for r in runs if r.scaling]
    data = {id(r): scaling_rows(r) for r in runs}
    names = in_paper_order(data.values())
    fig, axes = panel_grid(len(names), 5.4, 4.4, 0.6)
    texts = []
    for ax, b in zip(axes, names, strict=True):
        lat_all = []
        for j, r in enumerate(runs):
            color = colors[id(r)]
            pts = [p for _, p in sorted(data[id(r)].get(b, {}).items()) if p.get("latency_s") and p.get("pass_at_k") is not None]  # fmt: skip
            if not pts:
                continue
            x = [p["latency_s"] for p in pts]
            y = [100 * p["pass_at_k"] for p in pts]
            se = [100 * (p.get("pass_at_k_se") or 0) for p in pts]
            yerr = [
                [min(s, v) for s, v in zip(se, y, strict=True)],
                [min(s, 100 - v) for s, v in zip(se, y, strict=True)],
            ]
            xerr = [p.get("latency_se") or 0 for p in pts]
            ax.errorbar(x, y, yerr=yerr, xerr=xerr, marker="o", ms=4, capsize=2, color=color, elinewidth=0.8,
                        label=display_name(r, baseline), **line_style(r, baseline))  # fmt: skip
            lat_all += x
            # labels right-below for one model, left-above for the next, so that close lines keep them apart
            offset, ha = ((6, -12), "left") if j % 2 == 0 else ((-6, 5), "right")
            for k, (p, xx, yy) in enumerate(zip(pts, x, y, strict=True)):
                texts.append(ax.annotate(f"K={p['k']}" if k == 0 else f"{p['k']}", (xx, yy), textcoords="offset points",
                                         xytext=offset, ha=ha, fontsize=8, color=color))  # fmt: skip
        if lat_all:
            log10_axis(ax, lat_all)
        style_axes(ax, b, "latency per problem (s, log scale; point labels: K)", "Pass@K (%)")
        percent_axis(ax)  # the point labels may stand above 100 %, outside the axes
    figure_legend(fig, axes)
    return save(fig, path, texts)


def write_plots(runs: list[Run], out_dir: str | Path, baseline: Run | None = None) -> list[Path]:
    """Write every plot the runs hold data for; returns the paths written. Each run keeps its colour throughout."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    evaluated = with_results(runs)
    if evaluated:
        for name, plot in zip(PLOTS, (plot_accuracy_vs_length, plot_pass_at_k, plot_pass_at_k_boundary,
                                      plot_length_by_correctness, plot_parallel_thinking), strict=True):  # fmt: skip
            plot(runs, out / name, baseline)
            written.append(out / name)
        if has_budget_curves(evaluated):
            plot_budget_curves(runs, out / OPTIONAL_PLOTS[0], baseline)
            written.append(out / OPTIONAL_PLOTS[0])
        if has_length_histograms(evaluated):
            plot_length_histograms(runs, out / OPTIONAL_PLOTS[1], baseline)
            written.append(out / OPTIONAL_PLOTS[1])
    if any(r.scaling for r in runs):
        plot_test_time_scaling(runs, out / OPTIONAL_PLOTS[2], baseline)
        written.append(out / OPTIONAL_PLOTS[2])
    return written
