"""The accuracy-length plane of an experiment (DLER Fig. 8): one marker per cell, an arrow per pair of cells.

Takes plain data (`dler.experiments.table.plane_data`): points {name, group, role, x (mean length), y (pass@1 %),
se (%)} and arrows (from cell, to cell). The drawn data is written beside the PNG as `<name>.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dler.eval.plot_style import figure_legend, new_figure, percent_axis, save, style_axes, thousands

ROLE_MARKERS = {"grpo": "o", "dler": "*", "full": "*", "ablation": "o"}


def plot_plane(points: list[dict[str, Any]], arrows: list[tuple[str, str]], path: str | Path, title: str):
    """Markers coloured by group (a penalty), shaped by role; an arrow from each `arrows` pair's first cell to its
    second, and each marker labelled with its cell. Returns the figure; writes the PNG and the drawn data."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    groups = list(dict.fromkeys(p["group"] for p in points))
    colors = {g: colormaps["tab10"](i % 10) for i, g in enumerate(groups)}
    at = {p["name"]: p for p in points}
    fig = new_figure(9.0, 6.4)
    ax = fig.add_subplot(1, 1, 1)
    texts = []
    for p in points:
        ax.errorbar(p["x"], p["y"], yerr=p["se"], color=colors[p["group"]], marker=ROLE_MARKERS.get(p["role"], "s"),
                    ms=13 if ROLE_MARKERS.get(p["role"]) == "*" else 9, markeredgecolor="black", linestyle="none",
                    capsize=3, zorder=3)  # fmt: skip
        texts.append(ax.annotate(p["name"], (p["x"], p["y"]), textcoords="offset points", xytext=(6, 6), fontsize=8,
                                 color=colors[p["group"]]))  # fmt: skip
    for a, b in arrows:
        ax.annotate("", xy=(at[b]["x"], at[b]["y"]), xytext=(at[a]["x"], at[a]["y"]), zorder=2,
                    arrowprops={"arrowstyle": "->", "color": colors[at[b]["group"]], "lw": 1.6, "shrinkA": 6,
                                "shrinkB": 8})  # fmt: skip
    ax.margins(x=0.12)  # room for the labels of the outermost cells
    if max((p["x"] for p in points), default=0) >= 1000:
        thousands(ax, "x")
    style_axes(ax, title, "mean response length (tokens)", "pass@1 (%) ± se")
    percent_axis(ax)
    roles = list(dict.fromkeys(p["role"] for p in points))
    marks = [(Line2D([], [], color="grey", marker=ROLE_MARKERS.get(r, "s"), linestyle="none", ms=9), r) for r in roles]
    colours = [(Line2D([], [], color=colors[g], linewidth=6), g) for g in groups]
    figure_legend(fig, [], colours + marks, ncol=min(6, len(groups) + len(roles)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"points": points, "arrows": [list(a) for a in arrows]}, indent=2))
    return save(fig, path, texts)
