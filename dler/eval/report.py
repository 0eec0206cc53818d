"""`dler report`: the paper's Table 1 and the neighbouring papers' analyses from finished evaluation runs.

Reads only `results.json` (and `protocol.json`) of each run, so it works on runs copied from a GPU cluster.
Writes `report.md` (tables) and PNG plots into the output folder:

- Table 1: pass@1 per benchmark, average, average length and the length cut against a baseline run;
- length by correctness, truncation and accuracy per 1,000 tokens; pass@k and maj@k; a temperature table
  when a model was evaluated at several temperatures; each run's protocol, with differences flagged;
- plots: accuracy vs length, pass@k curves, length by correctness, maj@k vs tokens spent (parallel thinking).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dler.eval.benchmarks import BENCHMARKS
from dler.eval.metrics import length_cut
from dler.eval.run import PROTOCOL_FILE, RESULTS_FILE

logger = logging.getLogger(__name__)

PLOTS = ("accuracy_vs_length.png", "pass_at_k.png", "length_by_correctness.png", "parallel_thinking.png")


@dataclass
class Run:
    path: Path
    label: str
    results: dict[str, Any]

    @property
    def benchmarks(self) -> dict[str, dict[str, Any]]:
        return self.results["benchmarks"]

    @property
    def sampling(self) -> dict[str, Any]:
        return self.results["protocol"]["sampling"]

    @property
    def model(self) -> str:
        return self.results["protocol"].get("model", "?")

    def avg(self, key: str, names: list[str]) -> float | None:
        values = [
            self.benchmarks[b][key] for b in names if b in self.benchmarks and self.benchmarks[b].get(key) is not None
        ]
        return sum(values) / len(values) if values else None


class ReportError(ValueError):
    pass


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / RESULTS_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path / RESULTS_FILE} is not valid JSON: {exc}") from None


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Runs from directories holding results.json, or sweep folders whose `t<T>/` subfolders hold one each."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / RESULTS_FILE).is_file():
            found.append(p)
            continue
        children = sorted(
            (c for c in p.glob("*/") if (c / RESULTS_FILE).is_file()),
            key=lambda c: (_temperature_of(c), c.name),
        )
        if not children:
            hint = (
                " (an unfinished run has protocol.json but no results.json yet)"
                if (p / PROTOCOL_FILE).is_file()
                else ""
            )
            raise ReportError(f"{p} holds no {RESULTS_FILE}, nor subfolders with one{hint}")
        found.extend(children)
    runs, seen = [], set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            runs.append(Run(p, "", _load(p)))
    _label(runs)
    return runs


def _temperature_of(path: Path) -> float:
    try:
        return float(json.loads((path / RESULTS_FILE).read_text())["protocol"]["sampling"]["temperature"])
    except (OSError, ValueError, KeyError):
        return math.inf


def _label(runs: list[Run]) -> None:
    """Shortest distinct path suffixes: `dler-7b`, or `sweep/t0.6` for a sweep's subfolders."""
    depth = 1
    while True:
        labels = ["/".join(r.path.resolve().parts[-depth:]) for r in runs]
        if len(set(labels)) == len(labels) or depth > 8:
            break
        depth += 1
    for r, label in zip(runs, labels, strict=True):
        if depth == 1 and r.path.name.startswith("t") and _looks_like_temperature(r.path.name):
            label = "/".join(r.path.resolve().parts[-2:])
        r.label = label


def _looks_like_temperature(name: str) -> bool:
    try:
        float(name[1:])
        return True
    except ValueError:
        return False


def _columns(runs: list[Run]) -> list[str]:
    """Benchmarks of any run: registry order first (the paper's), then others by first appearance."""
    names: list[str] = []
    for r in runs:
        for b in r.benchmarks:
            if b not in names:
                names.append(b)
    order = list(BENCHMARKS)
    return sorted(names, key=lambda b: (order.index(b) if b in order else len(order), names.index(b)))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _num(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table1(runs: list[Run], baseline: Run | None = None) -> str:
    """The paper's Table 1: pass@1 (%) per benchmark, average, average length (tokens), length cut vs baseline."""
    rows = ([baseline] if baseline is not None else []) + [r for r in runs if r is not baseline]
    cols = _columns(rows)
    header = ["run", *cols, "avg", "avg length"] + (["length cut"] if baseline is not None else [])
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    partial = False
    for r in rows:
        have = [b for b in cols if b in r.benchmarks]
        mark = ""
        if len(have) < len(cols):
            mark, partial = "*", True
        cells = [r.label + (" (baseline)" if r is baseline else "")]
        cells += [_pct(r.benchmarks[b]["pass@1"]) if b in r.benchmarks else "—" for b in cols]
        cells += [_pct(r.avg("pass@1", cols)) + mark, _num(r.avg("mean_length", cols)) + mark]
        if baseline is not None:
            if r is baseline:
                cells.append("—")
            else:
                common = [b for b in cols if b in r.benchmarks and b in baseline.benchmarks]
                mine, base = r.avg("mean_length", common), baseline.avg("mean_length", common)
                cells.append(f"{length_cut(mine, base):+.1f}%" if common and base else "—")
        lines.append(_row(cells))
    notes = ["pass@1 in %, mean over problems x samples; lengths in tokens (mean over samples, then over benchmarks)."]
    if baseline is not None:
        notes.append("Length cut: change of the average length against the baseline, over the benchmarks both have.")
    if partial:
        notes.append("*: averaged over the benchmarks that run has.")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def length_table(runs: list[Run]) -> str:
    """Length by correctness (the Concise Reasoning analysis), truncation, accuracy per 1,000 tokens."""
    header = ["run", "benchmark", "T", "pass@1", "mean length", "correct", "incorrect", "truncated", "acc / 1k tokens"]
    lines = [_row(header), _row(["---"] * 3 + ["---:"] * (len(header) - 3))]
    for r in runs:
        for name, m in [*r.benchmarks.items(), ("overall", r.results["overall"])]:
            lines.append(
                _row([
                    r.label, name, f"{r.sampling['temperature']:g}", _pct(m["pass@1"]), _num(m["mean_length"]),
                    _num(m.get("mean_length_correct")), _num(m.get("mean_length_incorrect")),
                    _pct(m["truncation_rate"]) + "%", _num(m.get("accuracy_per_1k_tokens"), 3),
                ])
            )  # fmt: skip
    return (
        "\n".join(lines)
        + "\n\nAccuracy per 1,000 tokens = pass@1 / (mean length / 1000). Overall rows average the benchmarks.\n"
    )


def passk_table(runs: list[Run]) -> str:
    """Overall pass@k and maj@k per run (k = powers of two up to n)."""
    ks = sorted({int(k) for r in runs for k in r.results["overall"]["pass@k"]})
    header = ["run", "metric", *[f"k={k}" for k in ks]]
    lines = [_row(header), _row(["---", "---"] + ["---:"] * len(ks))]
    for r in runs:
        for metric in ("pass@k", "maj@k"):
            values = r.results["overall"][metric]
            lines.append(_row([r.label, metric, *[_pct(values.get(str(k))) for k in ks]]))
    return (
        "\n".join(lines)
        + "\n\nUnbiased pass@k (Chen et al. 2021) and majority vote over the first k samples, in %, averaged over benchmarks.\n"
    )


def temperature_table(runs: list[Run]) -> str | None:
    """pass@1 and length per temperature for models evaluated at several (robustness at T=0)."""
    by_model: dict[str, list[Run]] = {}
    for r in runs:
        by_model.setdefault(r.model, []).append(r)
    sweeps = {m: rs for m, rs in by_model.items() if len({x.sampling["temperature"] for x in rs}) > 1}
    if not sweeps:
        return None
    temps = sorted({x.sampling["temperature"] for rs in sweeps.values() for x in rs})
    header = ["model", *[f"pass@1 T={t:g}" for t in temps], *[f"length T={t:g}" for t in temps]]
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for model, rs in sweeps.items():
        at = {x.sampling["temperature"]: x.results["overall"] for x in rs}
        cells = [Path(model).name or model]
        cells += [_pct(at[t]["pass@1"]) if t in at else "—" for t in temps]
        cells += [_num(at[t]["mean_length"]) if t in at else "—" for t in temps]
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def protocol_table(runs: list[Run]) -> tuple[str, list[str]]:
    """Each run's protocol, and warnings where runs that are compared were evaluated differently."""
    header = ["run", "model", "backend", "T", "top_p", "n", "max tokens", "seed", "problems", "versions"]
    lines = [_row(header), _row(["---"] * len(header))]
    for r in runs:
        p, s = r.results["protocol"], r.sampling
        v = p.get("versions", {})
        ver = ", ".join(f"{k} {v[k]}" for k in ("dler", "vllm", "transformers", "math-verify") if v.get(k))
        problems = ", ".join(f"{b} {m['num_problems']}" for b, m in r.benchmarks.items())
        lines.append(_row([r.label, f"`{p.get('model')}`", p.get("backend", "?"), f"{s['temperature']:g}",
                           f"{s['top_p']:g}", str(s["n"]), str(s["max_tokens"]), str(s["seed"]), problems, ver]))  # fmt: skip
    warnings = []
    for key in ("max_tokens", "top_p", "n"):
        values = {r.sampling[key] for r in runs if r.sampling["temperature"] > 0 or key == "max_tokens"}
        if len(values) > 1:
            warnings.append(f"runs differ in {key}: {sorted(values)}")
    for b in _columns(runs):
        counts = {r.benchmarks[b]["num_problems"] for r in runs if b in r.benchmarks}
        hashes = {
            r.results["protocol"].get("benchmarks", {}).get(b, {}).get("content_sha256")
            for r in runs
            if b in r.benchmarks
        }
        if len(counts) > 1:
            warnings.append(f"runs evaluated different numbers of {b} problems: {sorted(counts)}")
        elif len(hashes - {None}) > 1:
            warnings.append(f"runs evaluated different {b} problems (content hashes differ)")
    return "\n".join(lines) + "\n", warnings


# --------------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _grid(count: int) -> tuple[int, int]:
    cols = min(3, count)
    return math.ceil(count / cols), cols


def plot_accuracy_vs_length(runs: list[Run], path: Path) -> Path:
    cols = _columns(runs)
    markers = "sD^vP*Xh<>"
    fig = _figure(7.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    for color, r in zip(_colors(len(runs)), runs, strict=True):
        for j, b in enumerate(cols):
            if b in r.benchmarks:
                m = r.benchmarks[b]
                ax.scatter(m["mean_length"], 100 * m["pass@1"], color=color, marker=markers[j % len(markers)],
                           s=28, alpha=0.45)  # fmt: skip
        x, y = r.avg("mean_length", cols), r.avg("pass@1", cols)
        ax.scatter(x, 100 * y, color=color, s=110, edgecolor="black", zorder=3)
        ax.annotate(r.label, (x, 100 * y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    for j, b in enumerate(cols):  # legend of the benchmark markers, in grey
        ax.scatter([], [], color="grey", marker=markers[j % len(markers)], s=28, label=b)
    ax.set_xlabel("mean response length (tokens)")
    ax.set_ylabel("pass@1 (%)")
    ax.set_title("Accuracy vs length (large: average over benchmarks)")
    ax.grid(alpha=0.3)
    if len(cols) > 1:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_pass_at_k(runs: list[Run], path: Path) -> Path:
    panels = [*_columns(runs), "overall"]
    rows, cols = _grid(len(panels))
    fig = _figure(4.2 * cols, 3.4 * rows)
    colors = _colors(len(runs))
    for i, name in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for color, r in zip(colors, runs, strict=True):
            m = r.results["overall"] if name == "overall" else r.benchmarks.get(name)
            if m is None:
                continue
            ks = sorted(int(k) for k in m["pass@k"])
            ax.plot(ks, [100 * m["pass@k"][str(k)] for k in ks], marker="o", ms=3, color=color, label=r.label)
        ax.set_xscale("log", base=2)
        ax.set_title(name)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_length_by_correctness(runs: list[Run], path: Path) -> Path:
    panels = [*_columns(runs), "overall"]
    rows, cols = _grid(len(panels))
    fig = _figure(4.2 * cols, 3.4 * rows)
    width = 0.38
    for i, name in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs = list(range(len(runs)))
        correct, incorrect = [], []
        for r in runs:
            m = r.results["overall"] if name == "overall" else r.benchmarks.get(name, {})
            correct.append(m.get("mean_length_correct") or 0.0)
            incorrect.append(m.get("mean_length_incorrect") or 0.0)
        ax.bar([x - width / 2 for x in xs], correct, width, label="correct", color="tab:green")
        ax.bar([x + width / 2 for x in xs], incorrect, width, label="incorrect", color="tab:red")
        ax.set_xticks(xs)
        ax.set_xticklabels([r.label for r in runs], rotation=30, ha="right", fontsize=7)
        ax.set_title(name)
        ax.set_ylabel("mean length (tokens)")
        ax.grid(alpha=0.3, axis="y")
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_parallel_thinking(runs: list[Run], path: Path) -> Path:
    fig = _figure(11, 4.2)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for color, r in zip(_colors(len(runs)), runs, strict=True):
        points = r.results["overall"]["parallel_thinking"]
        acc = [100 * p["maj@k"] for p in points]
        ax1.plot([p["total_tokens"] for p in points], acc, marker="o", ms=3, color=color, label=r.label)
        ax2.plot([p["latency_tokens"] for p in points], acc, marker="o", ms=3, color=color, label=r.label)
        for p, y in zip(points, acc, strict=True):
            ax1.annotate(f"{p['k']}", (p["total_tokens"], y), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax1.set_xscale("log")
    ax1.set_xlabel("tokens per problem: k x mean length")
    ax2.set_xlabel("parallel latency: longest of the k samples (tokens)")
    for ax in (ax1, ax2):
        ax.set_ylabel("maj@k (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_title("Majority vote vs tokens spent")
    ax2.set_title("Majority vote vs latency")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_plots(runs: list[Run], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_accuracy_vs_length(runs, out / PLOTS[0]),
        plot_pass_at_k(runs, out / PLOTS[1]),
        plot_length_by_correctness(runs, out / PLOTS[2]),
        plot_parallel_thinking(runs, out / PLOTS[3]),
    ]


# --------------------------------------------------------------------------------------------- the report


def build_report(runs: list[Run], baseline: Run | None = None, plots: list[Path] | None = None) -> str:
    everything = ([baseline] if baseline is not None and baseline not in runs else []) + runs
    parts = ["# Evaluation report", "", "## Table 1: accuracy and length", "", table1(runs, baseline)]
    temps = temperature_table(everything)
    if temps:
        parts += ["## Temperature sweep (overall)", "", temps]
    parts += ["## Length by correctness", "", length_table(everything), "## pass@k and majority vote", "",
              passk_table(everything)]  # fmt: skip
    proto, warnings = protocol_table(everything)
    parts += ["## Protocol", "", proto]
    if warnings:
        parts += ["**Warning: these runs were not evaluated the same way:**", ""] + [f"- {w}" for w in warnings] + [""]
    if plots:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(parts)


def report(
    run_dirs: list[str | Path],
    baseline: str | Path | None = None,
    output: str | Path | None = None,
    plots: bool = True,
) -> Path:
    """Write report.md and the plots for `run_dirs` (and a baseline run) to `output`; returns report.md's path.

    `output` defaults to the single run directory given, or `report/` in the current directory for several.
    """
    runs = find_runs(list(run_dirs))
    base = None
    if baseline is not None:
        found = find_runs([baseline])
        if len(found) != 1:
            raise ReportError(
                f"--baseline must be one run (a folder with {RESULTS_FILE}); {baseline} holds {len(found)}"
            )
        base = next((r for r in runs if r.path.resolve() == found[0].path.resolve()), found[0])
        if base not in runs:
            _label([base, *runs])
    if output is None:
        output = runs[0].path if len(run_dirs) == 1 and len(runs) == 1 else Path("report")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    everything = ([base] if base is not None and base not in runs else []) + runs
    written = write_plots(everything, out) if plots else []
    path = out / "report.md"
    path.write_text(build_report(runs, base, written))
    return path
