"""`dler report`: the paper's Table 1 and the neighbouring papers' analyses from finished evaluation runs.

Reads `results.json`, the per-problem `generations/<benchmark>.csv` (for paired comparisons and error bands) and
`scaling.json` (test-time scaling, `dler eval --parallel-k`) of each run, so it works on runs copied from a GPU
cluster. Writes `report.md` (tables) and PNG plots into the output folder:

- Table 1: pass@1 ± standard error per benchmark, average, average length and the length cut against a baseline
  run; with a baseline, a paired comparison per benchmark on the problems both runs share;
- Table 5: Pass@K ± se, mean length and latency per K (test-time scaling), from `scaling.json`;
- length by correctness, truncation and accuracy per 1,000 tokens; pass@k and maj@k; a temperature table
  when a model was evaluated at several temperatures; each run's protocol, with differences flagged;
- plots: accuracy vs length, pass@k curves, the pass@k boundary view (log k, base vs RL), length by correctness,
  maj@k vs tokens spent (parallel thinking), and where the runs hold the data: budget curves, length histograms,
  Pass@K vs latency.

Fields added to results.json over time (`pass@1_se`, `budget_curve`, `length_histogram`, ...) are optional: an
older run is reported without error bars or without the plot that needs them.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dler.eval.benchmarks import BENCHMARKS
from dler.eval.metrics import Z95, length_cut, paired_difference, pass_at_k
from dler.eval.run import GENERATIONS_DIR, PROTOCOL_FILE, RESULTS_FILE, SCALING_FILE

logger = logging.getLogger(__name__)

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

LEGEND_FONT = 9
TICK_FONT = 9
DIFFICULTIES = ("easy", "medium", "hard")


@dataclass(eq=False)
class Run:
    path: Path
    label: str
    results: dict[str, Any] | None
    scaling: dict[str, Any] | None = None
    _per_problem: dict[str, dict[int, tuple[int, float]] | None] = field(default_factory=dict, repr=False)

    @property
    def benchmarks(self) -> dict[str, dict[str, Any]]:
        return self.results["benchmarks"] if self.results else {}

    @property
    def protocol(self) -> dict[str, Any]:
        if self.results:
            return self.results.get("protocol", {})
        return (self.scaling or {}).get("protocol") or {}

    @property
    def sampling(self) -> dict[str, Any]:
        return self.protocol.get("sampling", {})

    @property
    def temperature(self) -> float | None:
        t = self.sampling.get("temperature", self.protocol.get("temperature"))
        return None if t is None else float(t)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def model(self) -> str:
        return self.protocol.get("model") or (self.scaling or {}).get("model") or "?"

    def avg(self, key: str, names: list[str]) -> float | None:
        values = [
            self.benchmarks[b][key] for b in names if b in self.benchmarks and self.benchmarks[b].get(key) is not None
        ]
        return sum(values) / len(values) if values else None

    def avg_se(self, key: str, names: list[str]) -> float | None:
        """Standard error of the mean of `key` over the benchmarks this run has (independent benchmarks):
        sqrt(sum se^2) / B. None when one of them has no `<key>_se`."""
        have = [b for b in names if b in self.benchmarks]
        ses = [self.benchmarks[b].get(f"{key}_se") for b in have]
        if not have or any(s is None for s in ses):
            return None
        return math.sqrt(sum(s * s for s in ses)) / len(have)

    def per_problem(self, benchmark: str) -> dict[int, tuple[int, float]] | None:
        """{problem index: (samples, mean correctness)} from `generations/<benchmark>.csv`, else from the JSONL
        generations; None when the run folder holds neither."""
        if benchmark not in self._per_problem:
            self._per_problem[benchmark] = _read_per_problem(self.path / GENERATIONS_DIR, benchmark)
        return self._per_problem[benchmark]


class ReportError(ValueError):
    pass


def _load(path: Path, name: str) -> dict[str, Any] | None:
    if not (path / name).is_file():
        return None
    try:
        return json.loads((path / name).read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path / name} is not valid JSON: {exc}") from None


def _is_run(path: Path) -> bool:
    return (path / RESULTS_FILE).is_file() or (path / SCALING_FILE).is_file()


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Runs from directories holding results.json (or scaling.json), or sweep folders whose `t<T>/` subfolders
    hold one each."""
    found: list[Path] = []
    for p in map(Path, paths):
        if _is_run(p):
            found.append(p)
            continue
        children = sorted((c for c in p.glob("*/") if _is_run(c)), key=lambda c: (_temperature_of(c), c.name))
        if not children:
            hint = (
                " (an unfinished run has protocol.json but no results.json yet)"
                if (p / PROTOCOL_FILE).is_file()
                else ""
            )
            raise ReportError(f"{p} holds no {RESULTS_FILE} (or {SCALING_FILE}), nor subfolders with one{hint}")
        found.extend(children)
    runs, seen = [], set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            runs.append(Run(p, "", _load(p, RESULTS_FILE), _load(p, SCALING_FILE)))
    _label(runs)
    return runs


def _temperature_of(path: Path) -> float:
    for name in (RESULTS_FILE, SCALING_FILE):
        try:
            protocol = json.loads((path / name).read_text())["protocol"]
            return float(protocol.get("sampling", protocol)["temperature"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
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


def _display(r: Run, baseline: Run | None = None) -> str:
    """A run's name in tables and legends: its label, marked when it is the baseline or decoded greedily."""
    name = r.label
    if r.greedy:
        name += " (T=0, greedy)"
    if baseline is not None and r is baseline:
        name += " (baseline)"
    return name


def _read_per_problem(folder: Path, benchmark: str) -> dict[int, tuple[int, float]] | None:
    path = folder / f"{benchmark}.csv"
    if path.is_file():
        out: dict[int, tuple[int, float]] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                samples = int(float(row.get("samples") or 0))
                if row.get("mean_correct") not in (None, ""):
                    mean = float(row["mean_correct"])
                elif samples:
                    mean = float(row["correct"]) / samples
                else:
                    continue
                out[int(row["index"])] = (samples, mean)
        return out
    path = folder / f"{benchmark}.jsonl"
    if path.is_file():  # runs written before the CSV existed: the correctness lists of the JSONL generations
        out = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    scores = [float(x) >= 0.5 for x in record["correct"]]
                    out[int(record["index"])] = (len(scores), sum(scores) / len(scores))
                except (ValueError, KeyError, TypeError, ZeroDivisionError):
                    continue  # an interrupted last line
        return out or None
    return None


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


def _pm(x: float | None, se: float | None, digits: int = 1) -> str:
    """`86.9 ± 1.2` (in %), or `86.9` without a standard error."""
    if x is None:
        return "—"
    return f"{100 * x:.{digits}f}" + ("" if se is None else f" ± {100 * se:.{digits}f}")


def _num(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _with_results(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.results is not None]


# --------------------------------------------------------------------------------------------- tables


def table1(runs: list[Run], baseline: Run | None = None) -> str:
    """The paper's Table 1: pass@1 ± se (%) per benchmark, average, average length (tokens), length cut vs baseline."""
    rows = _with_results(([baseline] if baseline is not None else []) + [r for r in runs if r is not baseline])
    cols = _columns(rows)
    header = ["run", *cols, "avg", "avg length"] + (["length cut"] if baseline is not None else [])
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    partial = missing_se = False
    for r in rows:
        have = [b for b in cols if b in r.benchmarks]
        mark = ""
        if len(have) < len(cols):
            mark, partial = "*", True
        cells = [_display(r, baseline)]
        for b in cols:
            m = r.benchmarks.get(b)
            cells.append(_pm(m["pass@1"], m.get("pass@1_se")) if m is not None else "—")
            missing_se |= m is not None and m.get("pass@1_se") is None
        cells += [_pm(r.avg("pass@1", cols), r.avg_se("pass@1", cols)) + mark, _num(r.avg("mean_length", cols)) + mark]
        if baseline is not None:
            if r is baseline:
                cells.append("—")
            else:
                common = [b for b in cols if b in r.benchmarks and b in baseline.benchmarks]
                mine, base = r.avg("mean_length", common), baseline.avg("mean_length", common)
                cells.append(f"{length_cut(mine, base):+.1f}%" if common and base else "—")
        lines.append(_row(cells))
    notes = [
        "pass@1 in %, mean over problems x samples; ± is one standard error over problems: std of the per-problem "
        "mean correctness (ddof=1) / sqrt(problems), the error bar for problems like these (it includes the noise "
        "of the finite samples per problem; results.json's pass@1_sampling_se is that noise alone); for the "
        "average sqrt(sum of se²) / benchmarks. Lengths in tokens (mean over samples, then over benchmarks)."
    ]
    if missing_se:
        notes.append("Cells without ± come from runs whose results.json has no standard error (older runs).")
    if any(r.greedy for r in rows):
        notes.append("T=0: greedy decoding, one sample per problem.")
    if baseline is not None:
        notes.append("Length cut: change of the average length against the baseline, over the benchmarks both have.")
    if partial:
        notes.append("*: averaged over the benchmarks that run has.")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def _paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """`metrics.paired_difference` on the problems both runs have (None when they share none); no standard error
    from a single problem."""
    try:
        d = paired_difference(a, b, intersect=True)
    except ValueError:
        return None
    if d["num_problems"] < 2:
        d = {**d, "se": None, "ci95": None}
    return d


def paired_table(runs: list[Run], baseline: Run) -> str:
    """Per run and benchmark: the pass@1 difference to the baseline on the problems both evaluated, and its paired
    standard error (per-problem mean correctness from generations/<benchmark>.csv)."""
    others = [r for r in _with_results(runs) if r is not baseline]
    cols = _columns([baseline, *others])
    header = ["run", "benchmark", "problems", "baseline", "run", "difference", "se", "95% interval", "|diff| > 2 se"]
    lines = [_row(header), _row(["---", "---"] + ["---:"] * 6 + ["---"])]
    unpaired = dropped = False
    for r in others:
        diffs: list[tuple[float, float | None]] = []
        shared = [b for b in cols if b in r.benchmarks and b in baseline.benchmarks]
        for b in shared:
            a_pp, b_pp = baseline.per_problem(b), r.per_problem(b)
            if a_pp and b_pp:
                d = _paired({i: v for i, (_, v) in a_pp.items()}, {i: v for i, (_, v) in b_pp.items()})
                if d is None:
                    lines.append(_row([_display(r), b, "none shared", "—", "—", "—", "—", "—", "—"]))
                    continue
                mean, se, base_acc, run_acc = d["difference"], d["se"], d["mean_a"], d["mean_b"]
                problems = str(d["num_problems"])
                if d["dropped"]:
                    problems += f" ({d['dropped']} not shared)"
                    dropped = True
            else:  # no per-problem data: an unpaired difference from the two standard errors, if both are known
                ma, mb = baseline.benchmarks[b], r.benchmarks[b]
                base_acc, run_acc = ma["pass@1"], mb["pass@1"]
                sa, sb = ma.get("pass@1_se"), mb.get("pass@1_se")
                se = math.sqrt(sa**2 + sb**2) if sa is not None and sb is not None else None
                mean = run_acc - base_acc
                problems, unpaired = "unpaired", True
            diffs.append((mean, se))
            lines.append(_row([_display(r), b, problems, _pct(base_acc), _pct(run_acc), *_diff_cells(mean, se)]))
        if len(diffs) > 1 and len(diffs) == len(shared):
            mean = sum(x for x, _ in diffs) / len(diffs)
            se = None if any(s is None for _, s in diffs) else math.sqrt(sum(s * s for _, s in diffs)) / len(diffs)
            lines.append(_row([_display(r), "**average**", "", "", "", *_diff_cells(mean, se)]))
    notes = [
        "Difference: run - baseline pass@1 in percentage points, on the problems both runs evaluated (per-problem "
        "mean correctness from generations/<benchmark>.csv; baseline and run columns are pass@1 on those "
        "problems); se: std(per-problem differences) / sqrt(problems), the paired standard error "
        "(`dler.eval.metrics.paired_difference`); 95% interval: difference ± 1.96 se; bold where |difference| > "
        "2 se. Average: mean of the benchmarks' differences, se sqrt(sum of se²) / benchmarks."
    ]
    if dropped:
        notes.append("not shared: problems only one of the two runs evaluated, left out of the comparison.")
    if unpaired:
        notes.append(
            "unpaired: a run has no per-problem data; difference of the two pass@1 with se sqrt(se_a² + se_b²) "
            "(wider than a paired se; — when a run has no se)."
        )
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def _diff_cells(mean: float, se: float | None) -> list[str]:
    big = se is not None and abs(mean) > 2 * se
    diff = f"{100 * mean:+.1f}"
    cells = [f"**{diff}**" if big else diff, "—" if se is None else f"{100 * se:.1f}"]
    if se is None:
        cells.append("—")
    else:
        cells.append(f"[{100 * (mean - Z95 * se):+.1f}, {100 * (mean + Z95 * se):+.1f}]")
    cells.append("—" if se is None else ("yes" if big else "no"))
    return cells


def _scaling_rows(r: Run) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for b, points in ((r.scaling or {}).get("benchmarks") or {}).items():
        out[b] = {int(p["k"]): p for p in points if p.get("k") is not None}
    return out


def table5(runs: list[Run], baseline: Run | None = None) -> str | None:
    """Test-time scaling (the paper's Table 5), one table per benchmark: rows K; per model Pass@K ± se (%),
    mean length (tokens) and latency (s), from each run's scaling.json."""
    runs = [r for r in runs if r.scaling]
    if not runs:
        return None
    data = {id(r): _scaling_rows(r) for r in runs}
    names: list[str] = []
    for r in runs:
        names += [b for b in data[id(r)] if b not in names]
    order, seen = list(BENCHMARKS), list(names)
    names.sort(key=lambda b: (order.index(b) if b in order else len(order), seen.index(b)))
    parts = []
    for b in names:
        models = [r for r in runs if b in data[id(r)]]
        ks = sorted({k for r in models for k in data[id(r)][b]})
        header = ["K"]
        for r in models:
            name = _display(r, baseline)
            header += [f"{name} Pass@K", f"{name} length", f"{name} latency (s)"]
        lines = [f"### {b}", "", _row(header), _row(["---:"] * len(header))]
        for k in ks:
            cells = [str(k)]
            for r in models:
                p = data[id(r)][b].get(k)
                if p is None:
                    cells += ["—"] * 3
                    continue
                lat, lat_se = p.get("latency_s"), p.get("latency_se")
                cells += [
                    _pm(p.get("pass_at_k"), p.get("pass_at_k_se")),
                    _num(p.get("mean_length")),
                    "—" if lat is None else f"{lat:.1f}" + ("" if lat_se is None else f" ± {lat_se:.1f}"),
                ]
            lines.append(_row(cells))
        problems = [
            f"{_display(r, baseline)} {', '.join(map(str, sorted({p.get('problems') for p in data[id(r)][b].values()} - {None}))) or '?'}"
            for r in models
        ]
        lines += ["", "problems: " + "; ".join(problems)]
        parts.append("\n".join(lines))
    protocol = next((r.scaling.get("protocol") or {} for r in runs), {})
    note = (
        "Pass@K in %, ± one standard error over questions (Pass@K: "
        + protocol.get("pass_at_k", "fraction of questions with a correct sample among K")
        + "); length: mean tokens per sample; latency (s) ± se: "
        + protocol.get("latency", "seconds per question for one request of K samples")
        + " (`dler eval --parallel-k`)."
    )
    return "\n\n".join(parts) + "\n\n" + note + "\n"


def length_table(runs: list[Run]) -> str:
    """Length by correctness (the Concise Reasoning analysis), truncation, accuracy per 1,000 tokens."""
    header = ["run", "benchmark", "T", "pass@1", "mean length", "correct", "incorrect", "truncated", "acc / 1k tokens"]
    lines = [_row(header), _row(["---"] * 3 + ["---:"] * (len(header) - 3))]
    for r in _with_results(runs):
        for name, m in [*r.benchmarks.items(), ("overall", r.results["overall"])]:
            lines.append(
                _row([
                    r.label, name, f"{r.temperature:g}", _pct(m["pass@1"]), _num(m["mean_length"]),
                    _num(m.get("mean_length_correct")), _num(m.get("mean_length_incorrect")),
                    _pct(m["truncation_rate"]) + "%", _num(m.get("accuracy_per_1k_tokens"), 3),
                ])
            )  # fmt: skip
    return (
        "\n".join(lines)
        + "\n\nAccuracy per 1,000 tokens = pass@1 / (mean length / 1000). Overall rows average the benchmarks.\n"
    )


def passk_table(runs: list[Run]) -> str:
    """Overall pass@k and maj@k per run (k = powers of two up to n, and n)."""
    runs = _with_results(runs)
    ks = sorted({int(k) for r in runs for k in r.results["overall"]["pass@k"]})
    header = ["run", "metric", *[f"k={k}" for k in ks]]
    lines = [_row(header), _row(["---", "---"] + ["---:"] * len(ks))]
    for r in runs:
        for metric in ("pass@k", "maj@k"):
            values = r.results["overall"].get(metric, {})
            lines.append(_row([_display(r), metric, *[_pct(values.get(str(k))) for k in ks]]))
    return "\n".join(lines) + "\n\nUnbiased pass@k (Chen et al. 2021) and maj@k, in %, averaged over benchmarks.\n"


def temperature_table(runs: list[Run]) -> str | None:
    """pass@1 and length per temperature for models evaluated at several (robustness at T=0)."""
    by_model: dict[str, list[Run]] = {}
    for r in _with_results(runs):
        by_model.setdefault(r.model, []).append(r)
    sweeps = {m: rs for m, rs in by_model.items() if len({x.temperature for x in rs}) > 1}
    if not sweeps:
        return None
    temps = sorted({x.temperature for rs in sweeps.values() for x in rs})
    header = ["model", *[f"pass@1 T={t:g}" for t in temps], *[f"length T={t:g}" for t in temps]]
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for model, rs in sweeps.items():
        at = {x.temperature: x.results["overall"] for x in rs}
        cells = [Path(model).name or model]
        cells += [_pm(at[t]["pass@1"], at[t].get("pass@1_se"), 2) if t in at else "—" for t in temps]
        cells += [_num(at[t]["mean_length"]) if t in at else "—" for t in temps]
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def _grader_name(protocol: dict[str, Any]) -> str | None:
    g = protocol.get("grader")
    if isinstance(g, dict):
        return g.get("grader") or g.get("reward")
    if g is None:
        g = (protocol.get("resume_key") or {}).get("grader")
    return None if g is None else str(g)


def _grader_settings(protocol: dict[str, Any]) -> str | None:
    g = protocol.get("grader")
    if not isinstance(g, dict):
        return None
    return json.dumps({k: v for k, v in g.items() if k != "description"}, sort_keys=True)


def _template_id(protocol: dict[str, Any]) -> str | None:
    t = protocol.get("prompt_template")
    return None if t is None else hashlib.sha256(str(t).encode()).hexdigest()[:8]


def protocol_table(runs: list[Run]) -> tuple[str, list[str]]:
    """Each run's protocol, and warnings where runs that are compared were evaluated differently."""
    header = ["run", "model", "backend", "T", "top_p", "n", "max tokens", "seed", "prompt", "grader", "problems",
              "versions"]  # fmt: skip
    lines = [_row(header), _row(["---"] * len(header))]
    for r in runs:
        p, s = r.protocol, r.sampling
        v = p.get("versions", {})
        ver = ", ".join(f"{k} {v[k]}" for k in ("dler", "vllm", "transformers", "math-verify") if v.get(k))
        if r.results is not None:
            problems = ", ".join(f"{b} {m['num_problems']}" for b, m in r.benchmarks.items())
        else:
            problems = ", ".join(
                f"{b} {max((q.get('problems') or 0) for q in pts.values())}" for b, pts in _scaling_rows(r).items()
            )
        template = _template_id(p)
        lines.append(_row([
            r.label, f"`{r.model}`", str(p.get("backend", "?")), _fmt(r.temperature), _fmt(s.get("top_p")),
            _fmt(s.get("n")), _fmt(s.get("max_tokens")), _fmt(s.get("seed")), "—" if template is None else f"`{template}`",
            _grader_name(p) or "—", problems, ver,
        ]))  # fmt: skip
    return "\n".join(lines) + "\n\nprompt: first 8 hex digits of the prompt template's sha256.\n", protocol_warnings(
        runs
    )


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    return f"{x:g}" if isinstance(x, float) else str(x)


def _temperature(protocol: dict[str, Any]) -> float | None:
    t = (protocol.get("sampling") or {}).get("temperature", protocol.get("temperature"))
    return None if t is None else float(t)


def _gpus(protocol: dict[str, Any]) -> tuple | None:
    gpus = (protocol.get("hardware") or {}).get("gpus") or (protocol.get("resume_key") or {}).get("gpus")
    return tuple(gpus) if gpus else None


def _differences(items: list[tuple[str, dict[str, Any]]], latency: bool = False) -> list[str]:
    """What differs between the protocols of (label, protocol) pairs; `latency` adds the GPUs (timings)."""
    sampled = [(label, p) for label, p in items if _temperature(p) != 0]
    sampling = lambda key: lambda p: (p.get("sampling") or {}).get(key)  # noqa: E731
    checks = [
        ("backend", items, lambda p: p.get("backend"), str),
        ("prompt template", items, lambda p: p.get("prompt_template"), lambda t: f"`{_template_id({'prompt_template': t})}`"),
        ("temperature", items, _temperature, lambda t: f"{t:g}"),
        ("grader", items, _grader_name, str),
        ("grader settings", items, _grader_settings, lambda s: f"`{hashlib.sha256(s.encode()).hexdigest()[:8]}`"),
        ("max_tokens", items, sampling("max_tokens"), str),
        ("n (samples per problem)", sampled, sampling("n"), str),
        ("top_p", sampled, sampling("top_p"), lambda x: f"{x:g}"),
    ]  # fmt: skip
    if latency:
        checks.append(("GPUs (latencies are not comparable)", items, _gpus, lambda g: " + ".join(g)))
    out = []
    for what, group, get, show in checks:
        by_value: dict[Any, list[str]] = {}
        for label, p in group:
            value = get(p)
            if value is not None:
                by_value.setdefault(value, []).append(label)
        if len(by_value) > 1:
            if what == "grader settings" and len({_grader_name(p) for _, p in group} - {None}) > 1:
                continue  # already reported as different graders
            listed = "; ".join(f"{show(v)} ({', '.join(labels)})" for v, labels in _sorted_items(by_value))
            text = f"runs differ in {what}: {listed}"
            if what == "temperature" and any(_temperature(p) == 0 for _, p in group):
                text += " — T=0 is greedy decoding with one sample per problem"
            out.append(text)
    return out


def protocol_warnings(runs: list[Run]) -> list[str]:
    """Differences in how the compared runs were evaluated: backend, prompt template, temperature, grader, max
    tokens, samples per problem and top_p (the last two among sampled runs: greedy runs take one sample), and the
    problems; for the test-time scaling runs (scaling.json) also the GPUs their latencies were measured on."""
    evaluated = _with_results(runs)
    warnings = _differences([(r.label, r.results.get("protocol") or {}) for r in evaluated])
    for b in _columns(evaluated):
        counts = {r.benchmarks[b]["num_problems"] for r in evaluated if b in r.benchmarks}
        hashes = {
            r.protocol.get("benchmarks", {}).get(b, {}).get("content_sha256") for r in evaluated if b in r.benchmarks
        }
        if len(counts) > 1:
            warnings.append(f"runs evaluated different numbers of {b} problems: {sorted(counts)}")
        elif len(hashes - {None}) > 1:
            warnings.append(f"runs evaluated different {b} problems (content hashes differ)")
    scaled = [(r.label, r.scaling.get("protocol") or {}) for r in runs if r.scaling]
    warnings += [f"Table 5: {w}" for w in _differences(scaled, latency=True)]
    return warnings


def _sorted_items(d: dict[Any, list[str]]) -> list[tuple[Any, list[str]]]:
    try:
        return sorted(d.items())
    except TypeError:
        return list(d.items())


# --------------------------------------------------------------------------------------------- plot helpers


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _palette(runs: list[Run]) -> dict[int, Any]:
    """One colour per run, by its place among all the runs of the report: the same run has the same colour in
    every plot, also in plots that leave out runs without the data."""
    return {id(r): c for r, c in zip(runs, _colors(len(runs)), strict=True)}


def _grid(count: int) -> tuple[int, int]:
    cols = min(3, count)
    return math.ceil(count / cols), cols


def _style(r: Run, baseline: Run | None) -> dict[str, Any]:
    """The baseline is drawn dashed; every other run solid."""
    return {"linestyle": "--" if baseline is not None and r is baseline else "-"}


def _figure_legend(
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


def _percent_axis(ax) -> None:
    """A percentage y axis clamped to [0, 102]: all-zero data never shows negative percentages."""
    lo, hi = ax.get_ylim()
    bottom = max(0.0, lo)
    top = min(max(hi, bottom + 5.0), 102.0)
    ax.set_ylim(bottom, top)


def _band(ax, xs, ys, ses, color, alpha: float = 0.18) -> None:
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


def _tokens_label(x: float) -> str:
    """Token counts for axes: 2000 -> 2k, 3250 -> 3.25k, 128000 -> 128k, 1024 -> 1k, 32768 -> 32k, 512 -> 512,
    2097152 -> 2.1M."""
    if x >= 1_000_000:
        return f"{x / 1e6:.2g}M"
    if x >= 1000:
        if x % 1000 and x % 1024 == 0:  # powers of two: 16384 -> 16k, as budgets are usually written
            return f"{x / 1024:g}k"
        return f"{x / 1000:.3g}k"
    return f"{x:,.0f}"


def _log2_axis(ax, values: list[float], fmt=lambda x: f"{x:g}") -> None:
    """A log-2 x axis whose ticks read 1, 2, 4, ..., n (readable for n = 1024)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ticks = _powers_ticks(values)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, labels=[fmt(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    span = max(values) / min(values)
    pad = span ** (0.04) if span > 1 else 1.5
    ax.set_xlim(min(values) / pad, max(values) * pad)


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


def _style_axes(ax) -> None:
    ax.tick_params(labelsize=TICK_FONT)
    ax.grid(alpha=0.3)


def _declutter(fig, texts: list) -> None:
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


def _merge_se(ses: list[float | None]) -> float | None:
    if not ses or any(s is None for s in ses):
        return None
    return math.sqrt(sum(s * s for s in ses)) / len(ses)


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
        mu = sum(vals) / len(vals)
        out.append(math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) / math.sqrt(len(vals)))
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
    ses = [_merge_se([p[i] for p in per]) for i in range(len(ks))]
    return ks, ys, [None if s is None else 100 * s for s in ses]


# --------------------------------------------------------------------------------------------- plots


def _panels(cols: list[str]) -> list[str]:
    """One panel per benchmark, and an overall panel when there are several."""
    return [*cols, "overall"] if len(cols) > 1 else list(cols)


def _thousands(ax, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def _tokens_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tokens_label(v)))


def _line(ax, xs, ys, color, r: Run, baseline: Run | None, label: bool = True, **kw):
    """A run's curve: dashed for the baseline, and a larger marker when it is a single point (n = 1)."""
    kw.setdefault("marker", "o")
    kw.setdefault("ms", 7 if len(xs) == 1 else 3.5)
    kw.setdefault("clip_on", False)  # a point at 0 % stays whole on the axis
    return ax.plot(xs, ys, color=color, label=_display(r, baseline) if label else "_nolegend_",
                   **_style(r, baseline), **kw)  # fmt: skip


def plot_accuracy_vs_length(runs: list[Run], path: Path, baseline: Run | None = None):
    """Every run's per-benchmark points (small, by marker) and its average (large, with ± se); runs are told apart
    by colour in the legend (no text labels at the points, which overlap for close runs)."""
    from matplotlib.lines import Line2D

    colors = _palette(runs)
    runs = _with_results(runs)
    cols = _columns(runs)
    markers = "sD^vP*Xh<>"
    fig = _figure(8.5, 6.2)
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
                    label=_display(r, baseline))  # fmt: skip
    ax.set_xlabel("mean response length (tokens)", fontsize=10)
    ax.set_ylabel("pass@1 (%)", fontsize=10)
    ax.set_title("Accuracy vs length (large: average over benchmarks, ± se; small: one benchmark)", fontsize=11)
    _thousands(ax, "x")
    _style_axes(ax)
    lo, hi = ax.get_xlim()
    ax.set_xlim(max(0.0, lo), hi)
    _percent_axis(ax)
    _figure_legend(fig, [ax], title="runs (hollow: baseline)" if baseline is not None else "runs")
    if len(cols) > 1:
        marks = [
            (Line2D([], [], color="grey", marker=markers[j % len(markers)], linestyle="none", ms=6), b)
            for j, b in enumerate(cols)
        ]
        _figure_legend(fig, [], marks, ncol=1, loc="outside right upper", title="benchmarks")
    fig.savefig(path)
    return fig


def plot_pass_at_k(runs: list[Run], path: Path, baseline: Run | None = None):
    """pass@k per benchmark and overall, ± se bands where the runs have per-problem data; ticks 1, 2, 4, ..., n."""
    colors = _palette(runs)
    runs = _with_results(runs)
    cols = _columns(runs)
    panels = _panels(cols)
    rows, ncols = _grid(len(panels))
    fig = _figure(4.4 * ncols, 3.5 * rows + 0.6)
    axes = []
    for i, name in enumerate(panels):
        ax = fig.add_subplot(rows, ncols, i + 1)
        axes.append(ax)
        all_ks: list[int] = []
        for r in runs:
            if name != "overall" and name not in r.benchmarks:
                continue
            ks, ys, se = _pass_at_k_curve(r, name, cols)
            if not ks:
                continue
            all_ks += ks
            _line(ax, ks, ys, colors[id(r)], r, baseline)
            _band(ax, ks, ys, se, colors[id(r)])
        if all_ks:
            _log2_axis(ax, all_ks)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("k", fontsize=10)
        ax.set_ylabel("pass@k (%)", fontsize=10)
        _style_axes(ax)
        _percent_axis(ax)
    _figure_legend(fig, axes)
    fig.savefig(path)
    return fig


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
    colors = _palette(runs)
    runs = _with_results(runs)
    cols = _columns(runs)
    fig = _figure(8.5, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    all_ks: list[int] = []
    base_curve = _pass_at_k_curve(baseline, "overall", cols)[:2] if baseline is not None and baseline in runs else None
    for r in runs:
        color = colors[id(r)]
        ks, ys, se = _pass_at_k_curve(r, "overall", cols)
        all_ks += ks
        label = _display(r, baseline)
        if base_curve is not None and r is not baseline:
            bks, bys = base_curve
            shared = [k for k in ks if k in bks]
            k_x = _crossover(shared, [ys[ks.index(k)] for k in shared], [bys[bks.index(k)] for k in shared])
            if k_x is not None:
                label += f": baseline catches up at k≈{k_x:.0f}"
                ax.axvline(k_x, color=color, linestyle=":", linewidth=1.2)
        ax.plot(ks, ys, marker="o", ms=7 if len(ks) == 1 else 4, color=color, label=label, linewidth=2,
                **_style(r, baseline))  # fmt: skip
        _band(ax, ks, ys, se, color)
    if all_ks:
        _log2_axis(ax, all_ks)
    what = "average over benchmarks" if len(cols) > 1 else cols[0]
    ax.set_xlabel("k (samples per problem, log scale)", fontsize=10)
    ax.set_ylabel(f"pass@k (%), {what}", fontsize=10)
    ax.set_title(f"pass@k boundary: base vs RL models ({what})", fontsize=11)
    _style_axes(ax)
    _percent_axis(ax)
    _figure_legend(fig, [ax], ncol=2)
    fig.savefig(path)
    return fig


def plot_length_by_correctness(runs: list[Run], path: Path, baseline: Run | None = None):
    runs = _with_results(runs)
    panels = _panels(_columns(runs))
    rows, cols = _grid(len(panels))
    fig = _figure(4.4 * cols, 3.8 * rows + 0.5)
    width = 0.38
    axes = []
    for i, name in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        axes.append(ax)
        xs = list(range(len(runs)))
        correct, incorrect = [], []
        for r in runs:
            m = r.results["overall"] if name == "overall" else r.benchmarks.get(name, {})
            correct.append(m.get("mean_length_correct") or 0.0)
            incorrect.append(m.get("mean_length_incorrect") or 0.0)
        ax.bar([x - width / 2 for x in xs], correct, width, label="correct", color="tab:green")
        ax.bar([x + width / 2 for x in xs], incorrect, width, label="incorrect", color="tab:red")
        ax.set_xticks(xs)
        ax.set_xticklabels([_display(r, baseline) for r in runs], rotation=25, ha="right", fontsize=8)
        ax.set_title(name, fontsize=11)
        ax.set_ylabel("mean length (tokens)", fontsize=10)
        _thousands(ax)
        ax.tick_params(axis="y", labelsize=TICK_FONT)
        ax.grid(alpha=0.3, axis="y")
    _figure_legend(fig, axes)
    fig.savefig(path)
    return fig


def plot_parallel_thinking(runs: list[Run], path: Path, baseline: Run | None = None):
    """maj@k against the tokens spent on k samples and against their parallel latency; points labelled with k."""
    colors = _palette(runs)
    runs = _with_results(runs)
    fig = _figure(12, 5.2)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    texts = []
    xs1 = []
    for r in runs:
        color = colors[id(r)]
        points = r.results["overall"].get("parallel_thinking") or []
        if not points:
            continue
        acc = [100 * p["maj@k"] for p in points]
        _line(ax1, [p["total_tokens"] for p in points], acc, color, r, baseline)
        _line(ax2, [p["latency_tokens"] for p in points], acc, color, r, baseline, label=False)
        xs1 += [p["total_tokens"] for p in points]
        for p, y in zip(points, acc, strict=True):
            texts.append(ax1.annotate(f"{p['k']}", (p["total_tokens"], y), textcoords="offset points", xytext=(-4, 4),
                                      ha="right", fontsize=8, color=color))  # fmt: skip
    if xs1:
        _log2_axis(ax1, [x for x in xs1 if x > 0] or [1.0], _tokens_label)
    ax1.set_xlabel("tokens per problem: k x mean length (point labels: k)", fontsize=10)
    ax2.set_xlabel("parallel latency: longest of the k samples (tokens)", fontsize=10)
    _tokens_axis(ax2)
    for ax in (ax1, ax2):
        ax.set_ylabel("maj@k (%)", fontsize=10)
        _style_axes(ax)
        _percent_axis(ax)
    ax1.set_title("Majority vote vs tokens spent", fontsize=11)
    ax2.set_title("Majority vote vs latency", fontsize=11)
    _figure_legend(fig, [ax1, ax2])
    _declutter(fig, texts)
    fig.savefig(path)
    return fig


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
        se = _merge_se([at(c, b, "accuracy_se") for c in curves])
        out_s.append(None if se is None else 100 * se)
    if not out_b:
        return None
    return out_b, out_a, None if any(x is None for x in out_s) else out_s


def has_budget_curves(runs: list[Run]) -> bool:
    return any(m.get("budget_curve") for r in runs for m in r.benchmarks.values())


def plot_budget_curves(runs: list[Run], path: Path, baseline: Run | None = None):
    """Accuracy when every response is cut at B tokens, against B: one line per run, ± se band."""
    colors = _palette(runs)
    runs = [r for r in _with_results(runs) if any(m.get("budget_curve") for m in r.benchmarks.values())]
    cols = _columns(runs)
    panels = _panels(cols)
    rows, ncols = _grid(len(panels))
    fig = _figure(4.4 * ncols, 3.5 * rows + 0.6)
    axes = []
    for i, name in enumerate(panels):
        ax = fig.add_subplot(rows, ncols, i + 1)
        axes.append(ax)
        xs: list[float] = []
        ends = []
        for r in runs:
            curve = _budget_curve(r, name, cols)
            if curve is None:
                continue
            budgets, acc, se = curve
            xs += budgets
            _line(ax, budgets, acc, colors[id(r)], r, baseline)
            _band(ax, budgets, acc, se, colors[id(r)])
            ends.append((budgets[-1], acc[-1], colors[id(r)]))
        for last, y, color in ends:  # past its longest response a run's accuracy no longer changes
            if xs and last < max(xs):
                ax.plot([last, max(xs)], [y, y], color=color, linestyle=":", linewidth=1.2, label="_nolegend_")
        positive = [x for x in xs if x > 0]
        if positive and len(positive) == len(xs) and max(xs) / min(xs) >= 4:
            _log2_axis(ax, xs, _tokens_label)
        else:
            _tokens_axis(ax)
        ax.set_title(name + ("" if xs else " (no budget curve)"), fontsize=11)
        ax.set_xlabel("token budget B", fontsize=10)
        ax.set_ylabel("accuracy (%)", fontsize=10)
        _style_axes(ax)
        _percent_axis(ax)
    _figure_legend(fig, axes, title="accuracy if every response were cut at B tokens (± se; dotted: past a run's "
                   "longest response)")  # fmt: skip
    fig.savefig(path)
    return fig


def has_length_histograms(runs: list[Run]) -> bool:
    return any(m.get("length_histogram") for r in runs for m in r.benchmarks.values())


def _rebin(counts: list[float], edges: list[float], new_edges: list[float]) -> list[float]:
    """Counts of one histogram spread onto other bin edges, in proportion to the overlap of the bins (samples taken
    as uniform within a bin); a zero-width bin goes whole to the new bin holding it."""
    out = [0.0] * (len(new_edges) - 1)
    for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        if not c:
            continue
        if hi <= lo:
            j = min(max(bisect.bisect_right(new_edges, lo) - 1, 0), len(out) - 1)
            out[j] += c
            continue
        for j in range(len(out)):
            overlap = min(hi, new_edges[j + 1]) - max(lo, new_edges[j])
            if overlap > 0:
                out[j] += c * overlap / (hi - lo)
    return out


def _histogram(r: Run) -> tuple[list[float], dict[str, dict[str, Any]], list[str]] | None:
    """A run's length histograms pooled over its benchmarks: each benchmark's counts (its own equal-width bins,
    `metrics.length_histogram`) spread onto one set of edges spanning all of them.
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
                    g[key] = [a + b for a, b in zip(g.get(key, [0.0] * len(spread)), spread, strict=True)]
    return edges, groups, list(hists)


def plot_length_histograms(runs: list[Run], path: Path, baseline: Run | None = None):
    """Response lengths of correct and incorrect samples, one row per run (its benchmarks pooled): all problems,
    then by difficulty (easy: solved in >= 2/3 of the samples, hard: <= 1/3, as `metrics.length_histogram`)."""
    from matplotlib.patches import Patch

    hists = [(r, h) for r in _with_results(runs) if (h := _histogram(r)) is not None]
    columns = ["all"] + [d for d in DIFFICULTIES if any(d in h[1] for _, h in hists)]
    fig = _figure(3.8 * len(columns), 2.9 * len(hists) + 0.6)
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
            title = f"{_display(r, baseline)}: {what}"
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("response length (tokens)", fontsize=9)
            ax.set_ylabel("samples", fontsize=9)
            _tokens_axis(ax)
            ax.set_ylim(bottom=0)
            ax.set_xlim(edges[0], edges[-1])
            _style_axes(ax)
    extra = [(Patch(color="tab:green", alpha=0.6), "correct"), (Patch(color="tab:red", alpha=0.6), "incorrect")]
    _figure_legend(fig, [], extra, title="response lengths, each run's benchmarks pooled; easy problems: solved "
                   "in >= 2/3 of the samples, hard: <= 1/3; (n): problems")  # fmt: skip
    fig.savefig(path)
    return fig


def plot_test_time_scaling(runs: list[Run], path: Path, baseline: Run | None = None):
    """Pass@K against latency (log x), one line per model and panel per benchmark, points labelled with K."""
    from matplotlib.ticker import NullFormatter, NullLocator

    colors = _palette(runs)
    runs = [r for r in runs if r.scaling]
    data = {id(r): _scaling_rows(r) for r in runs}
    names: list[str] = []
    for r in runs:
        names += [b for b in data[id(r)] if b not in names]
    order, seen = list(BENCHMARKS), list(names)
    names.sort(key=lambda b: (order.index(b) if b in order else len(order), seen.index(b)))
    rows, ncols = _grid(len(names))
    fig = _figure(5.4 * ncols, 4.4 * rows + 0.6)
    axes, texts = [], []
    for i, b in enumerate(names):
        ax = fig.add_subplot(rows, ncols, i + 1)
        axes.append(ax)
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
                        label=_display(r, baseline), **_style(r, baseline))  # fmt: skip
            lat_all += x
            # labels right-below for one model, left-above for the next, so that close lines keep them apart
            offset, ha = ((6, -12), "left") if j % 2 == 0 else ((-6, 5), "right")
            for k, (p, xx, yy) in enumerate(zip(pts, x, y, strict=True)):
                texts.append(ax.annotate(f"K={p['k']}" if k == 0 else f"{p['k']}", (xx, yy), textcoords="offset points",
                                         xytext=offset, ha=ha, fontsize=8, color=color))  # fmt: skip
        if lat_all:
            ax.set_xscale("log")
            lo, hi = min(lat_all), max(lat_all)
            ticks = _nice_log_ticks(lo / 1.15, hi * 1.15)
            ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(lo / 1.35, hi * 1.35)
        ax.set_title(b, fontsize=11)
        ax.set_xlabel("latency per problem (s, log scale; point labels: K)", fontsize=10)
        ax.set_ylabel("Pass@K (%)", fontsize=10)
        _style_axes(ax)
        _percent_axis(ax)
        lo_y, hi_y = ax.get_ylim()
        ax.set_ylim(lo_y, min(hi_y + 0.06 * (hi_y - lo_y), 108))  # room for the labels above the top points
    _figure_legend(fig, axes)
    _declutter(fig, texts)
    fig.savefig(path)
    return fig


def write_plots(runs: list[Run], out_dir: str | Path, baseline: Run | None = None) -> list[Path]:
    """Write every plot the runs hold data for; returns the paths written. Each run keeps its colour throughout."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    evaluated = _with_results(runs)
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


# --------------------------------------------------------------------------------------------- the report


def build_report(runs: list[Run], baseline: Run | None = None, plots: list[Path] | None = None) -> str:
    everything = ([baseline] if baseline is not None and baseline not in runs else []) + runs
    evaluated = _with_results(everything)
    parts = ["# Evaluation report", ""]
    warnings = protocol_warnings(everything)
    if evaluated:
        parts += ["## Table 1: accuracy and length", "", table1(runs, baseline if baseline in evaluated else None)]
        if warnings:
            parts += ["**Warning: these runs were not evaluated the same way:**", ""]
            parts += [f"- {w}" for w in warnings] + [""]
        if baseline is not None and baseline.results is not None and len(evaluated) > 1:
            parts += ["## Paired comparison with the baseline", "", paired_table(evaluated, baseline)]
    t5 = table5(everything, baseline)
    if t5:
        parts += ["## Table 5: test-time scaling", "", t5]
        if warnings and not evaluated:
            parts += ["**Warning: these runs were not evaluated the same way:**", ""]
            parts += [f"- {w}" for w in warnings] + [""]
    if evaluated:
        temps = temperature_table(evaluated)
        if temps:
            parts += ["## Temperature sweep (overall)", "", temps]
        parts += ["## Length by correctness", "", length_table(evaluated), "## pass@k and majority vote", "",
                  passk_table(evaluated)]  # fmt: skip
    proto, _ = protocol_table(everything)
    parts += ["## Protocol", "", proto]
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
    written = write_plots(everything, out, base) if plots else []
    path = out / "report.md"
    path.write_text(build_report(runs, base, written))
    return path
