"""The Markdown tables of `dler report`: the paper's Table 1, the paired comparison with a baseline, Table 5
(test-time scaling), length by correctness, pass@k and maj@k, the temperature sweep and each run's protocol."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dler.eval.graded import combined_se
from dler.eval.metrics import Z95, length_cut, paired_difference
from dler.eval.protocol_warnings import grader_name, template_id
from dler.eval.run_folders import (
    Run,
    benchmark_columns,
    display_name,
    in_paper_order,
    scaling_rows,
    with_results,
)


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


def table1(runs: list[Run], baseline: Run | None = None) -> str:
    """The paper's Table 1: pass@1 ± se (%) per benchmark, average, average length (tokens), length cut vs baseline."""
    rows = with_results(([baseline] if baseline is not None else []) + [r for r in runs if r is not baseline])
    cols = benchmark_columns(rows)
    header = ["run", *cols, "avg", "avg length"] + (["length cut"] if baseline is not None else [])
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    partial = missing_se = False
    for r in rows:
        have = [b for b in cols if b in r.benchmarks]
        mark = ""
        if len(have) < len(cols):
            mark, partial = "*", True
        cells = [display_name(r, baseline)]
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
    others = [r for r in with_results(runs) if r is not baseline]
    cols = benchmark_columns([baseline, *others])
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
                    lines.append(_row([display_name(r), b, "none shared", "—", "—", "—", "—", "—", "—"]))
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
            lines.append(_row([display_name(r), b, problems, _pct(base_acc), _pct(run_acc), *_diff_cells(mean, se)]))
        if len(diffs) > 1 and len(diffs) == len(shared):
            mean = sum(x for x, _ in diffs) / len(diffs)
            se = combined_se([s for _, s in diffs])
            lines.append(_row([display_name(r), "**average**", "", "", "", *_diff_cells(mean, se)]))
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


def table5(runs: list[Run], baseline: Run | None = None) -> str | None:
    """Test-time scaling (the paper's Table 5), one table per benchmark: rows K; per model Pass@K ± se (%),
    mean length (tokens) and latency (s), from each run's scaling.json."""
    runs = [r for r in runs if r.scaling]
    if not runs:
        return None
    data = {id(r): scaling_rows(r) for r in runs}
    names = in_paper_order(data.values())
    parts = []
    for b in names:
        models = [r for r in runs if b in data[id(r)]]
        ks = sorted({k for r in models for k in data[id(r)][b]})
        header = ["K"]
        for r in models:
            name = display_name(r, baseline)
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
            f"{display_name(r, baseline)} {', '.join(map(str, sorted({p.get('problems') for p in data[id(r)][b].values()} - {None}))) or '?'}"
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
    for r in with_results(runs):
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
    runs = with_results(runs)
    ks = sorted({int(k) for r in runs for k in r.results["overall"]["pass@k"]})
    header = ["run", "metric", *[f"k={k}" for k in ks]]
    lines = [_row(header), _row(["---", "---"] + ["---:"] * len(ks))]
    for r in runs:
        for metric in ("pass@k", "maj@k"):
            values = r.results["overall"].get(metric, {})
            lines.append(_row([display_name(r), metric, *[_pct(values.get(str(k))) for k in ks]]))
    return "\n".join(lines) + "\n\nUnbiased pass@k (Chen et al. 2021) and maj@k, in %, averaged over benchmarks.\n"


def temperature_table(runs: list[Run]) -> str | None:
    """pass@1 and length per temperature for models evaluated at several (robustness at T=0)."""
    by_model: dict[str, list[Run]] = {}
    for r in with_results(runs):
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


def protocol_table(runs: list[Run]) -> str:
    """Each run's protocol: model, backend, sampling, prompt template, grader, problems and versions."""
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
                f"{b} {max((q.get('problems') or 0) for q in pts.values())}" for b, pts in scaling_rows(r).items()
            )
        template = template_id(p)
        lines.append(_row([
            r.label, f"`{r.model}`", str(p.get("backend", "?")), _fmt(r.temperature), _fmt(s.get("top_p")),
            _fmt(s.get("n")), _fmt(s.get("max_tokens")), _fmt(s.get("seed")), "—" if template is None else f"`{template}`",
            grader_name(p) or "—", problems, ver,
        ]))  # fmt: skip
    return "\n".join(lines) + "\n\nprompt: first 8 hex digits of the prompt template's sha256.\n"


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    return f"{x:g}" if isinstance(x, float) else str(x)
