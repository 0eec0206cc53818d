"""The look shared by the report's figures: a figure without pyplot, one colour per run, the baseline dashed, one
legend per figure, percentage and log-2 axes with readable ticks, ± se bands and labels that do not overlap."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dler.eval.run_folders import Run, display_name

LEGEND_FONT = 9
TICK_FONT = 9


def new_figure(width: float, height: float):
    """A figure drawn by the Agg canvas directly: no pyplot, so nothing accumulates between reports."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def run_colors(runs: list[Run]) -> dict[int, Any]:
    """One colour per run, by its place among all the runs of the report: the same run has the same colour in
    every plot, also in plots that leave out runs without the data."""
    return {id(r): c for r, c in zip(runs, _colors(len(runs)), strict=True)}


def panel_grid(count: int, width: float, height: float, top: float) -> tuple[Any, list]:
    """A figure with `count` panels, at most three a row, each `width` x `height` inches, and `top` inches for
    the legend; returns (figure, panels)."""
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig = new_figure(width * cols, height * rows + top)
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(count)]


def line_style(r: Run, baseline: Run | None) -> dict[str, Any]:
    """The baseline is drawn dashed; every other run solid."""
    return {"linestyle": "--" if baseline is not None and r is baseline else "-"}


def figure_legend(
    fig, axes, extra: list | None = None, ncol: int | None = None, loc: str = "outside upper center", title=None
) -> None:
    """One legend for the whole figure, above the panels, from every labelled artist of every panel."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    for h, lab in extra or []:
        handles.append(h)
        labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc=loc, ncol=ncol or min(len(handles), 3), fontsize=LEGEND_FONT,
                   frameon=False, handlelength=3, title=title, title_fontsize=LEGEND_FONT)  # fmt: skip


def percent_axis(ax) -> None:
    """A percentage y axis clamped to [0, 100]: no tick or margin below 0 % (all-zero data) or above 100 %. The lines
    drawn so far are not clipped at the axes' edge, so a point at 0 or 100 % shows its whole marker."""
    lo, hi = ax.get_ylim()
    bottom = max(0.0, lo)
    top = min(max(hi, bottom + 5.0), 100.0)
    ax.set_ylim(min(bottom, top - 5.0), top)
    for line in ax.get_lines():
        line.set_clip_on(False)


def se_band(ax, xs, ys, ses, color, alpha: float = 0.18) -> None:
    """Shade mean ± se (clipped to [0, 100] %) where every point has a standard error."""
    if ses is None or any(s is None for s in ses):
        return
    lo = [max(0.0, y - s) for y, s in zip(ys, ses, strict=True)]
    hi = [min(100.0, y + s) for y, s in zip(ys, ses, strict=True)]
    ax.fill_between(xs, lo, hi, color=color, alpha=alpha, linewidth=0)


def _powers_ticks(values: list[float], max_ticks: int = 7) -> list[float]:
    """Powers of two spanning the values (1, 2, 4, ...), thinned to at most `max_ticks`, plus the largest value
    when it is not a power of two (n = 48: ..., 32, 48)."""
    lo, hi = min(values), max(values)
    powers = [2.0**e for e in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1) if lo <= 2.0**e <= hi]
    step = 1
    while len(powers[::step]) > max_ticks:
        step += 1
    ticks = powers[::step]
    if not ticks or ticks[-1] != hi:
        if ticks and math.log2(hi) - math.log2(ticks[-1]) < 0.5 * step:
            ticks = ticks[:-1]
        ticks.append(hi)
    return ticks


def tokens_label(x: float) -> str:
    """Token counts for axes: 2000 -> 2k, 3250 -> 3.25k, 128000 -> 128k, 1024 -> 1k, 32768 -> 32k, 512 -> 512,
    2097152 -> 2.1M."""
    if x >= 1_000_000:
        return f"{x / 1e6:.2g}M"
    if x >= 1000:
        if x % 1000 and x % 1024 == 0:  # powers of two: 16384 -> 16k, as budgets are usually written
            return f"{x / 1024:g}k"
        return f"{x / 1000:.3g}k"
    return f"{x:,.0f}"


def log2_axis(ax, values: list[float], fmt=lambda x: f"{x:g}") -> None:
    """A log-2 x axis whose ticks read 1, 2, 4, ..., n (readable for n = 1024)."""
    ticks = _powers_ticks(values)
    _log_ticks(ax, 2, ticks, [fmt(t) for t in ticks])
    span = max(values) / min(values)
    pad = span ** (0.04) if span > 1 else 1.5
    ax.set_xlim(min(values) / pad, max(values) * pad)


def log10_axis(ax, values: list[float]) -> None:
    """A log-10 x axis with 1-2-5 ticks around the values (latencies in seconds)."""
    lo, hi = min(values), max(values)
    ticks = _nice_log_ticks(lo / 1.15, hi * 1.15)
    _log_ticks(ax, 10, ticks, [f"{t:g}" for t in ticks])
    ax.set_xlim(lo / 1.35, hi * 1.35)


def _log_ticks(ax, base: int, ticks: list[float], labels: list[str]) -> None:
    """A log x axis with exactly these major ticks and no minor ones."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log", base=base)
    ax.set_xticks(ticks, labels=labels)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _nice_log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between lo and hi (at least two: the ends when the range is narrow)."""
    ticks = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            t = m * 10.0**e
            if lo <= t <= hi:
                ticks.append(t)
    if len(ticks) < 2:
        ticks = sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")} | set(ticks))
    return ticks


def style_axes(ax, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> None:
    """Title and axis labels in the report's sizes, readable ticks and a light grid."""
    if title is not None:
        ax.set_title(title, fontsize=11)
    if xlabel is not None:
        ax.set_xlabel(xlabel, fontsize=10)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=10)
    ax.tick_params(labelsize=TICK_FONT)
    ax.grid(alpha=0.3)


def declutter(fig, texts: list) -> None:
    """Move offset annotations up or down until no two overlap and each stays inside its panel (labels of close
    points stay readable); a label with no free place keeps its first position."""
    if not texts:
        return
    for t in texts:
        t.set_in_layout(False)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    points_per_pixel = 72.0 / fig.dpi
    placed = []
    for t in texts:
        x0, y0 = t.xyann
        frame = t.axes.get_window_extent(renderer) if t.axes is not None else None
        bb = t.get_window_extent(renderer)
        step = (bb.height + 1) * points_per_pixel
        for i in range(61):
            shift = (i + 1) // 2 * step * (1 if i % 2 else -1)
            t.xyann = (x0, y0 + shift)
            bb = t.get_window_extent(renderer)
            inside = frame is None or (
                bb.x0 >= frame.x0 and bb.x1 <= frame.x1 and bb.y0 >= frame.y0 and bb.y1 <= frame.y1
            )
            if inside and not any(bb.overlaps(o) for o in placed):
                break
        else:
            t.xyann = (x0, y0)
            bb = t.get_window_extent(renderer)
        placed.append(bb.expanded(1.0, 1.0))


def benchmark_panels(cols: list[str]) -> list[str]:
    """One panel per benchmark, and an overall panel when there are several."""
    return [*cols, "overall"] if len(cols) > 1 else list(cols)


def thousands(ax, axis: str = "y") -> None:
    """Tick labels with thousands separators (12,000) on the y or x axis."""
    from matplotlib.ticker import FuncFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def tokens_axis(ax) -> None:
    """x tick labels as token counts: 2k, 16k, 2.1M (`tokens_label`)."""
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: tokens_label(v)))


def run_line(ax, xs, ys, color, r: Run, baseline: Run | None, label: bool = True, **kw):
    """A run's curve: dashed for the baseline, and a larger marker when it is a single point (n = 1)."""
    kw.setdefault("marker", "o")
    kw.setdefault("ms", 7 if len(xs) == 1 else 3.5)
    kw.setdefault("clip_on", False)  # a point at 0 % stays whole on the axis
    return ax.plot(xs, ys, color=color, label=display_name(r, baseline) if label else "_nolegend_",
                   **line_style(r, baseline), **kw)  # fmt: skip


def save(fig, path: str | Path, labels: list | None = None):
    """Move the point labels apart (`declutter`), write the PNG and return the figure."""
    declutter(fig, labels or [])
    fig.savefig(path)
    return fig
