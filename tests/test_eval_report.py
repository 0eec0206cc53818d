"""dler report: Table 1 with standard errors, the paired comparison, Table 5, protocol warnings, and the plots
(checked on the matplotlib objects: tick labels, legends, line styles, bands, axis limits, label overlaps).

Run folders are written by hand (results.json, generations/<benchmark>.csv, scaling.json), so these tests do not
depend on how dler.eval.metrics computes the numbers; `new=False` writes a results.json from before the standard
errors, budget curves and histograms existed."""

import csv
import hashlib
import json
import math
import re
import statistics
from pathlib import Path

import pytest

from dler.eval.length_plots import plot_budget_curves, plot_length_by_correctness, plot_length_histograms
from dler.eval.metrics import pass_at_k
from dler.eval.plots import (
    OPTIONAL_PLOTS,
    PLOTS,
    plot_accuracy_vs_length,
    plot_parallel_thinking,
    plot_pass_at_k,
    plot_pass_at_k_boundary,
    plot_test_time_scaling,
)
from dler.eval.protocol_warnings import protocol_warnings
from dler.eval.report import report
from dler.eval.run_folders import ReportError, find_runs
from dler.eval.tables import paired_table, table1, table5

PNG = b"\x89PNG\r\n\x1a\n"
TEMPLATE = "{problem} Let's think step by step and output the final answer within \\boxed{}."


def ks_for(n):
    ks = [2**i for i in range(int(math.log2(n)) + 1)]
    return ks if ks[-1] == n else [*ks, n]


def bench(counts, n, length, new=True):
    """One benchmark's metrics from the number of correct samples of each problem."""
    means = [c / n for c in counts]
    p1 = sum(means) / len(means)
    ks = ks_for(n)
    passk = {str(k): sum(pass_at_k(n, c, k) for c in counts) / len(counts) for k in ks}
    m = {
        "num_problems": len(counts), "n": n, "pass@1": p1, "pass@k": passk, "maj@k": {str(k): min(1.0, p1 * (1 + 0.04 * math.log2(k))) for k in ks},
        "mean_length": length, "median_length": length,
        "mean_length_correct": 0.8 * length if p1 > 0 else None,
        "mean_length_incorrect": 1.4 * length if p1 < 1 else None,
        "truncation_rate": 0.05, "accuracy_per_1k_tokens": p1 / (length / 1000),
        "parallel_thinking": [
            {"k": k, "maj@k": min(1.0, p1 * (1 + 0.04 * math.log2(k))), "pass@k": passk[str(k)], "total_tokens": k * length,
             "latency_tokens": length * (1 + 0.2 * math.log2(k))}
            for k in ks
        ],
    }  # fmt: skip
    if new:
        se = statistics.stdev(means) / math.sqrt(len(means))
        m["pass@1_se"] = se
        m["pass@1_sampling_se"] = None
        budgets = [1024, 2048, 4096, 8192, 16384, 32768]
        m["budget_curve"] = {
            "budgets": budgets,
            "accuracy": [p1 * min(1.0, b / (2 * length)) for b in budgets],
            "accuracy_se": [se * min(1.0, b / (2 * length)) for b in budgets],
        }
        edges = [0, 2048, 4096, 8192, 16384, 32768]
        shift = 0 if length < 4000 else 2
        correct = [8, 6, 3, 1, 0][-shift:] + [8, 6, 3, 1, 0][:-shift] if shift else [8, 6, 3, 1, 0]
        m["length_histogram"] = {
            "edges": edges,
            "correct": correct,
            "incorrect": [1, 2, 3, 4, 5],
            "easy": {"correct": correct[:3] + [0, 0], "incorrect": [0, 0, 1, 0, 0]},
            "medium": {"correct": [0, 0] + correct[2:], "incorrect": [1, 1, 1, 1, 0]},
            "hard": {"correct": [0, 0, 0, 0, 0], "incorrect": [0, 1, 1, 3, 5]},
        }
    return m


def overall(benchmarks):
    items = list(benchmarks.values())
    ks = sorted(set.intersection(*(set(m["pass@k"]) for m in items)), key=int)

    def macro(key):
        values = [m[key] for m in items if m.get(key) is not None]
        return sum(values) / len(values) if values else None

    out = {key: macro(key) for key in ("pass@1", "mean_length", "mean_length_correct", "mean_length_incorrect",
                                       "truncation_rate", "accuracy_per_1k_tokens")}  # fmt: skip
    out["num_problems"] = sum(m["num_problems"] for m in items)
    out["pass@k"] = {k: sum(m["pass@k"][k] for m in items) / len(items) for k in ks}
    out["maj@k"] = {k: sum(m["maj@k"][k] for m in items) / len(items) for k in ks}
    out["parallel_thinking"] = [
        {"k": int(k), "maj@k": out["maj@k"][k], "pass@k": out["pass@k"][k],
         "total_tokens": int(k) * out["mean_length"],
         "latency_tokens": sum(p["latency_tokens"] for m in items for p in m["parallel_thinking"] if str(p["k"]) == k)
         / len(items)}
        for k in ks
    ]  # fmt: skip
    if all("pass@1_se" in m for m in items):
        out["pass@1_se"] = math.sqrt(sum(m["pass@1_se"] ** 2 for m in items)) / len(items)
    return out


def write_run(path, per_benchmark, *, n=16, temperature=0.6, new=True, per_problem=True, model=None, **protocol):
    """A run folder as `dler eval` leaves it: results.json and generations/<benchmark>.csv.
    `per_benchmark`: {name: (correct samples per problem, mean length)}."""
    benchmarks = {b: bench(counts, n, length, new) for b, (counts, length) in per_benchmark.items()}
    results = {
        "protocol": {
            "model": model or f"models/{path.name}", "backend": protocol.get("backend", "vllm"),
            "prompt_template": protocol.get("prompt_template", TEMPLATE),
            "grader": {"reward": "dler.rewards.MathReward", "grader": protocol.get("grader", "dler"),
                       "description": "...", "answer_timeout": 5},
            "sampling": {"n": n, "temperature": temperature, "top_p": 0.95 if temperature else 1.0,
                         "max_tokens": protocol.get("max_tokens", 32768), "seed": 0, "greedy": temperature == 0},
            "versions": {"dler": "0.1.0", "vllm": "0.29.0"},
            "benchmarks": {b: {"content_sha256": f"sha-{b}"} for b in per_benchmark},
        },
        "benchmarks": benchmarks,
        "overall": overall(benchmarks),
    }  # fmt: skip
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    if per_problem:
        (path / "generations").mkdir()
        for b, (counts, length) in per_benchmark.items():
            with open(path / "generations" / f"{b}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["benchmark", "index", "samples", "correct", "mean_correct", "mean_length", "truncated"])
                for i, c in enumerate(counts):
                    w.writerow([b, i, n, c, c / n, length, 0])
    return path


def write_scaling(path, model, points, backend="vllm", temperature=0.6):
    """scaling.json of `dler eval --parallel-k`: points = {benchmark: [(k, pass, se, length, latency), ...]}."""
    path.mkdir(parents=True, exist_ok=True)
    data = {
        "model": model, "backend": backend,
        "benchmarks": {
            b: [{"k": k, "pass_at_k": p, "pass_at_k_se": se, "mean_length": length, "latency_s": lat,
                 "latency_se": lat / 20, "problems": 30} for k, p, se, length, lat in rows]
            for b, rows in points.items()
        },
        "protocol": {"model": model, "backend": backend, "prompt_template": TEMPLATE,
                     "sampling": {"n": 16, "temperature": temperature, "top_p": 0.95, "max_tokens": 32768}},
    }  # fmt: skip
    (path / "scaling.json").write_text(json.dumps(data))
    return path


# math500: 8 problems, aime24: 6 problems; the RL run solves more aime24 problems with 1/4 of the tokens
BASE = {"math500": ([16, 16, 12, 8, 16, 4, 12, 16], 4000), "aime24": ([4, 0, 8, 0, 2, 0], 12000)}
DLER = {"math500": ([16, 16, 12, 12, 16, 8, 12, 16], 1000), "aime24": ([12, 4, 16, 2, 8, 6], 3000)}


@pytest.fixture
def two_runs(tmp_path):
    base = write_run(tmp_path / "r1-1.5b", BASE)
    dler = write_run(tmp_path / "dler-1.5b", DLER)
    return base, dler


def texts(items):
    return [t.get_text() for t in items]


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


# --------------------------------------------------------------------------------------------- tables


def test_table1_shows_pass1_with_standard_errors_and_the_length_cut(two_runs):
    found = find_runs(list(two_runs))
    text = table1(found, baseline=found[0])
    header, _, row_base, row_dler = text.splitlines()[:4]
    assert header == "| run | math500 | aime24 | avg | avg length | length cut |"
    # math500 base: per-problem means 1, 1, .75, .5, 1, .25, .75, 1 -> 78.1, stdev .2815 / sqrt(8) = 10.0
    # aime24 base: .25, 0, .5, 0, .125, 0 -> 14.6, se 8.2; avg 46.4 ± sqrt(9.95² + 8.18²) / 2 = 6.4
    assert row_base == "| r1-1.5b (baseline) | 78.1 ± 10.0 | 14.6 ± 8.2 | 46.4 ± 6.4 | 8,000 | — |"
    assert row_dler.startswith("| dler-1.5b | 84.4 ± 6.6 | 50.0 ± 13.3 | 67.2 ± 7.4 | 2,000 | -75.0% |")
    assert "± is one standard error over problems" in text


def test_table1_without_standard_errors_for_an_older_run(tmp_path):
    old = write_run(tmp_path / "old", BASE, new=False, per_problem=False)
    text = table1(find_runs([old]))
    assert "| old | 78.1 | 14.6 | 46.4 | 8,000 |" in text
    assert "without ± come from runs whose results.json has no standard error" in text


def test_a_greedy_run_is_labelled_t0_in_table1(tmp_path, two_runs):
    base, _ = two_runs
    sweep = tmp_path / "sweep"
    write_run(sweep / "t0", {"math500": ([1, 1, 0, 1, 1, 0, 1, 1], 900)}, n=1, temperature=0.0, model="runs/dler")
    write_run(sweep / "t0.6", DLER, model="runs/dler")
    path = report([sweep], baseline=base, output=tmp_path / "out", plots=False)
    text = path.read_text()
    assert "| sweep/t0 (T=0, greedy) | 75.0 ± 16.4 |" in text
    assert "T=0: greedy decoding, one sample per problem." in text
    assert "runs differ in temperature: 0 (sweep/t0); 0.6 (r1-1.5b, sweep/t0.6) — T=0 is greedy" in text
    assert "## Temperature sweep" in text and "pass@1 T=0" in text
    # greedy runs take one sample: n=1 is not reported as a difference in samples per problem
    assert "runs differ in n" not in text


def test_paired_comparison_on_shared_problems(tmp_path):
    base = write_run(tmp_path / "base", {"math500": ([8, 8, 4, 0], 2000)}, n=8)
    # the RL run also has a 5th problem the baseline lacks: only the 4 shared ones are compared
    rl = write_run(tmp_path / "rl", {"math500": ([8, 8, 8, 4, 8], 1000)}, n=8)
    found = find_runs([base, rl])
    text = paired_table(found, found[0])
    # differences 0, 0, .5, .5: mean .25, stdev .2887 / 2 = .1443 -> +25.0 ± 14.4, not > 2 se
    row = next(line for line in text.splitlines() if line.startswith("| rl | math500"))
    assert row == "| rl | math500 | 4 (1 not shared) | 62.50 | 87.50 | +25.0 | 14.4 | [-3.3, +53.3] | no |"


def test_paired_comparison_marks_large_differences_and_averages(two_runs):
    found = find_runs(list(two_runs))
    text = paired_table(found, found[0])
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| dler-1.5b")}
    # aime24 differences .5, .25, .5, .125, .375, .375: mean 35.4, se 6.0 -> marked
    assert rows["aime24"] == "| dler-1.5b | aime24 | 6 | 14.58 | 50.00 | **+35.4** | 6.0 | [+23.7, +47.1] | yes |"
    assert rows["math500"].endswith("| +6.2 | 4.1 | [-1.8, +14.3] | no |")
    assert rows["**average**"].endswith("| **+20.8** | 3.6 | [+13.7, +27.9] | yes |")


def test_paired_comparison_falls_back_to_unpaired_without_per_problem_data(tmp_path):
    base = write_run(tmp_path / "base", {"math500": ([8, 8, 4, 0], 2000)}, n=8, per_problem=False)
    rl = write_run(tmp_path / "rl", {"math500": ([8, 8, 8, 4], 1000)}, n=8)
    found = find_runs([base, rl])
    text = paired_table(found, found[0])
    # se sqrt(se_a² + se_b²): base means 1, 1, .5, 0 -> se .239; rl means 1, 1, 1, .5 -> se .125 -> 27.0
    assert "| rl | math500 | unpaired | 62.50 | 87.50 | +25.0 | 27.0 | [-27.9, +77.9] | no |" in text
    assert "unpaired: a run has no per-problem data" in text


def test_report_writes_every_table_and_plot(two_runs, tmp_path):
    base, dler = two_runs
    write_scaling(dler, "models/dler", {"aime24": [(1, 0.3, 0.05, 3000, 20.0), (4, 0.5, 0.06, 3100, 28.0)]})
    write_scaling(base, "models/r1", {"aime24": [(1, 0.2, 0.05, 12000, 80.0), (4, 0.35, 0.06, 12500, 120.0)]})
    out = tmp_path / "report"
    text = report([dler], baseline=base, output=out).read_text()
    for heading in ("## Table 1", "## Paired comparison with the baseline", "## Table 5: test-time scaling",
                    "## Length by correctness", "## pass@k and majority vote", "## Protocol"):  # fmt: skip
        assert heading in text
    assert "**Warning" not in text
    for name in PLOTS + OPTIONAL_PLOTS:
        png = out / name
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 1000, name
        assert f"]({name})" in text


def test_older_runs_get_the_plots_they_have_data_for(tmp_path):
    old = write_run(tmp_path / "old", BASE, new=False, per_problem=False)
    out = tmp_path / "out"
    report([old], output=out)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(PLOTS)


def test_table5_rows_k_columns_per_model(tmp_path):
    a = write_scaling(tmp_path / "dler-7b", "models/dler-7b", {"aime24": [(1, 0.30, 0.05, 3000, 20.0),
                                                                          (8, 0.60, 0.07, 3100, 31.5)]})  # fmt: skip
    b = write_scaling(tmp_path / "r1-7b", "models/r1-7b", {"aime24": [(1, 0.25, 0.05, 12000, 80.0)]})
    found = find_runs([b, a])
    assert [r.results for r in found] == [None, None]  # scaling.json alone is a run folder
    text = table5(found, baseline=found[0])
    lines = text.splitlines()
    assert lines[0] == "### aime24"
    assert lines[2] == (
        "| K | r1-7b (baseline) Pass@K | r1-7b (baseline) length | r1-7b (baseline) latency (s) "
        "| dler-7b Pass@K | dler-7b length | dler-7b latency (s) |"
    )
    assert lines[4] == "| 1 | 25.0 ± 5.0 | 12,000 | 80.0 ± 4.0 | 30.0 ± 5.0 | 3,000 | 20.0 ± 1.0 |"
    assert lines[5] == "| 8 | — | — | — | 60.0 ± 7.0 | 3,100 | 31.5 ± 1.6 |"
    # a report of scaling runs alone: Table 5 and its plot, no Table 1
    out = tmp_path / "out"
    text = report([a, b], output=out).read_text()
    assert "## Table 5" in text and "## Table 1" not in text
    assert [p.name for p in out.glob("*.png")] == ["test_time_scaling.png"]


def test_protocol_warnings_name_what_differs_and_which_runs(tmp_path):
    a = write_run(tmp_path / "a", {"math500": ([8, 4], 100)}, n=8)
    b = write_run(tmp_path / "b", {"math500": ([8, 4], 100)}, n=16, backend="transformers",
                  prompt_template="{problem}", grader="released", max_tokens=4096)  # fmt: skip
    c = write_run(tmp_path / "c", {"math500": ([8, 4], 100)}, n=8, temperature=1.0)
    w = protocol_warnings(find_runs([a, b, c]))
    assert "runs differ in backend: transformers (b); vllm (a, c)" in w
    short = {t: hashlib.sha256(t.encode()).hexdigest()[:8] for t in (TEMPLATE, "{problem}")}
    assert f"runs differ in prompt template: `{short['{problem}']}` (b); `{short[TEMPLATE]}` (a, c)" in w
    assert "runs differ in temperature: 0.6 (a, b); 1 (c)" in w
    assert "runs differ in grader: dler (a, c); released (b)" in w
    assert "runs differ in max_tokens: 4096 (b); 32768 (a, c)" in w
    assert "runs differ in n (samples per problem): 8 (a, c); 16 (b)" in w
    assert not any("grader settings" in x for x in w)  # named graders already differ
    text = report([a, b], output=tmp_path / "out", plots=False).read_text()
    assert "**Warning: these runs were not evaluated the same way:**" in text


def test_sweep_folders_expand_in_temperature_order_with_labels(tmp_path):
    for t in ("0.6", "0", "1"):
        write_run(tmp_path / "sweep" / f"t{t}", {"math500": ([1, 0], 100)}, n=1 if t == "0" else 4,
                  temperature=float(t))  # fmt: skip
    found = find_runs([tmp_path / "sweep"])
    assert [r.label for r in found] == ["sweep/t0", "sweep/t0.6", "sweep/t1"]


def test_report_errors(tmp_path, two_runs):
    with pytest.raises(ReportError, match="no results.json"):
        find_runs([tmp_path / "missing"])
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "protocol.json").write_text("{}")
    with pytest.raises(ReportError, match="unfinished run"):
        find_runs([tmp_path / "unfinished"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    with pytest.raises(ReportError, match="not valid JSON"):
        find_runs([tmp_path / "broken"])
    base, dler = two_runs
    write_run(tmp_path / "sweep" / "t1", BASE, temperature=1.0)
    write_run(tmp_path / "sweep" / "t0.6", BASE)
    with pytest.raises(ReportError, match="--baseline must be one run"):
        report([dler], baseline=tmp_path / "sweep", output=tmp_path / "x")


def test_default_output_is_the_run_directory(two_runs):
    _, dler = two_runs
    path = report([dler], plots=False)
    assert path == dler / "report.md" and "dler-1.5b" in path.read_text()


# --------------------------------------------------------------------------------------------- plots


@pytest.fixture
def plotted(two_runs, tmp_path):
    found = find_runs(list(two_runs))
    return found, found[0], tmp_path


def figure_legend_texts(fig):
    """The entries of the figure-level legends (runs; for accuracy vs length also the benchmark markers)."""
    assert 1 <= len(fig.legends) <= 2, "figure-level legends"
    assert all(t.get_fontsize() >= 9 for legend in fig.legends for t in legend.get_texts()), "legend font readable"
    assert all(ax.get_legend() is None for ax in fig.axes), "no per-panel legends"
    return [t for legend in fig.legends for t in texts(legend.get_texts())]


def test_pass_at_k_ticks_bands_baseline_and_legend(plotted):
    runs, base, tmp = plotted
    fig = plot_pass_at_k(runs, tmp / "p.png", base)
    assert figure_legend_texts(fig) == ["r1-1.5b (baseline)", "dler-1.5b"]
    ax = fig.axes[0]  # math500
    assert texts(ax.get_xticklabels()) == ["1", "2", "4", "8", "16"]
    lines = lines_by_label(ax)
    assert lines["r1-1.5b (baseline)"].get_linestyle() == "--"
    assert lines["dler-1.5b"].get_linestyle() == "-"
    # a ± se band per run; the baseline's at k=1 spans 78.1 ± 10.0
    assert len(ax.collections) == 2
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(78.125 - 9.95, abs=0.01) and max(ys) == pytest.approx(100.0)
    assert ax.get_ylim()[0] >= 0
    assert [a.get_title() for a in fig.axes] == ["math500", "aime24", "overall"]
    assert len(fig.axes[2].collections) == 2  # overall: bands from the benchmarks' se


@pytest.mark.parametrize(
    "n, expected",
    [
        (1024, ["1", "4", "16", "64", "256", "1024"]),
        (48, ["1", "2", "4", "8", "16", "32", "48"]),
        (4, ["1", "2", "4"]),
    ],
)
def test_pass_at_k_ticks_stay_readable_for_any_n(tmp_path, n, expected):
    run = write_run(tmp_path / "big", {"aime24": ([0, n // 8, n // 2, n], 5000)}, n=n)
    fig = plot_pass_at_k(find_runs([run]), tmp_path / "p.png")
    assert texts(fig.axes[0].get_xticklabels()) == expected


def test_accuracy_vs_length_uses_a_legend_not_overlapping_labels(tmp_path):
    # two runs with almost the same accuracy and length: text labels at their points would overlap
    a = write_run(tmp_path / "dler-a", DLER)
    b = write_run(tmp_path / "dler-b", DLER)
    base = write_run(tmp_path / "base", BASE)
    runs = find_runs([base, a, b])
    fig = plot_accuracy_vs_length(runs, tmp_path / "a.png", runs[0])
    ax = fig.axes[0]
    assert not ax.texts
    assert figure_legend_texts(fig) == ["base (baseline)", "dler-a", "dler-b", "math500", "aime24"]
    # error bars on the average points: 67.2 ± 7.4 for a DLER run
    bars = [c for c in ax.collections if len(c.get_segments()) == 1]
    spans = sorted(round(s[0][1][1] - s[0][0][1], 1) for c in bars for s in [c.get_segments()])
    assert 14.8 in spans
    assert ax.get_ylim()[0] >= 0 and ax.get_xlim()[0] >= 0


def test_all_zero_data_shows_no_negative_percentages(tmp_path):
    zero = write_run(tmp_path / "zero", {"aime24": ([0, 0, 0, 0], 2000)}, n=4)
    runs = find_runs([zero])
    for plot in (plot_accuracy_vs_length, plot_pass_at_k, plot_pass_at_k_boundary, plot_parallel_thinking,
                 plot_budget_curves):  # fmt: skip
        fig = plot(runs, tmp_path / "z.png")
        for ax in fig.axes:
            assert ax.get_ylim()[0] == 0, plot.__name__
            assert not any(t.startswith(("−", "-")) for t in texts(ax.get_yticklabels())), plot.__name__


def test_parallel_thinking_k_labels_do_not_overlap(tmp_path):
    a = write_run(tmp_path / "a", DLER)
    b = write_run(tmp_path / "b", {"math500": ([16, 16, 12, 12, 16, 8, 12, 15], 1000), "aime24": DLER["aime24"]})
    runs = find_runs([a, b])
    fig = plot_parallel_thinking(runs, tmp_path / "pt.png")
    labels = fig.axes[0].texts
    assert len(labels) == 10
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(len(boxes)) for j in range(i))
    # k x mean length from 2,000 tokens (k=1) to 32,000 (k=16)
    assert texts(fig.axes[0].get_xticklabels()) == ["2k", "4k", "8k", "16k", "32k"]


def test_pass_at_k_boundary_base_dashed_and_crossover(tmp_path):
    # RL is better at k=1 but the base model solves more problems at large k (the boundary analysis)
    base = write_run(tmp_path / "base", {"aime24": ([1, 1, 1, 1, 0, 0], 9000)}, n=64)
    rl = write_run(tmp_path / "rl", {"aime24": ([40, 40, 0, 0, 0, 0], 3000)}, n=64)
    runs = find_runs([base, rl])
    fig = plot_pass_at_k_boundary(runs, tmp_path / "b.png", runs[0])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert texts(ax.get_xticklabels()) == ["1", "2", "4", "8", "16", "32", "64"]
    legend = figure_legend_texts(fig)
    assert legend[0] == "base (baseline)"
    assert re.fullmatch(r"rl: baseline catches up at k≈(\d+)", legend[1])
    assert 8 < int(legend[1].split("≈")[1]) < 64
    assert lines_by_label(ax)["base (baseline)"].get_linestyle() == "--"


def test_budget_curves_one_line_per_run_with_bands(plotted):
    runs, base, tmp = plotted
    fig = plot_budget_curves(runs, tmp / "bc.png", base)
    assert figure_legend_texts(fig) == ["r1-1.5b (baseline)", "dler-1.5b"]
    ax = fig.axes[0]
    assert texts(ax.get_xticklabels()) == ["1k", "2k", "4k", "8k", "16k", "32k"]
    assert len(ax.collections) == 2
    line = lines_by_label(ax)["dler-1.5b"]
    assert list(line.get_xdata()) == [1024, 2048, 4096, 8192, 16384, 32768]
    assert line.get_ydata()[-1] == pytest.approx(84.375)
    assert [a.get_title() for a in fig.axes] == ["math500", "aime24", "overall"]


def test_length_histograms_by_correctness_and_difficulty(plotted):
    runs, base, tmp = plotted
    fig = plot_length_histograms(runs, tmp / "h.png", base)
    assert figure_legend_texts(fig) == ["correct", "incorrect"]
    titles = [a.get_title() for a in fig.axes]
    assert titles[:4] == ["r1-1.5b (baseline): all problems", "r1-1.5b (baseline): easy problems",
                          "r1-1.5b (baseline): medium problems", "r1-1.5b (baseline): hard problems"]  # fmt: skip
    assert len(fig.axes) == 8
    # summed over math500 and aime24 (same edges): incorrect counts 1..5 twice
    heights = fig.axes[0].patches[2].get_data().values
    assert list(heights) == [2, 4, 6, 8, 10]


def test_test_time_scaling_plot_log_latency_with_k_labels(tmp_path):
    rows = [(1, 0.30, 0.05, 3000, 20.0), (2, 0.40, 0.05, 3000, 23.0), (4, 0.50, 0.05, 3000, 26.0)]
    a = write_scaling(tmp_path / "dler", "dler", {"aime24": rows})
    b = write_scaling(
        tmp_path / "dler-again", "dler", {"aime24": [(k, p + 0.005, s, n, t + 0.3) for k, p, s, n, t in rows]}
    )
    runs = find_runs([a, b])
    fig = plot_test_time_scaling(runs, tmp_path / "s.png", runs[0])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert texts(ax.texts) == ["K=1", "2", "4"] * 2
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(len(boxes)) for j in range(i))
    assert figure_legend_texts(fig) == ["dler (baseline)", "dler-again"]
    # 1-2-5 ticks around 20 .. 26.3 s: only 20 falls between, so the rounded ends join it
    assert texts(ax.get_xticklabels()) == ["17", "20", "30"]


def test_length_by_correctness_figure_legend(plotted):
    runs, base, tmp = plotted
    fig = plot_length_by_correctness(runs, tmp / "l.png", base)
    assert figure_legend_texts(fig) == ["correct", "incorrect"]
    assert texts(fig.axes[0].get_xticklabels()) == ["r1-1.5b (baseline)", "dler-1.5b"]


def test_no_plot_module_state_leaks(plotted):
    """Figures are built without pyplot: nothing accumulates between reports."""
    import sys

    runs, base, tmp = plotted
    plot_pass_at_k(runs, tmp / "p.png", base)
    assert "matplotlib.pyplot" not in sys.modules or not __import__("matplotlib.pyplot").pyplot.get_fignums()


def test_png_files_are_written(plotted):
    runs, base, tmp = plotted
    path = Path(tmp / "p.png")
    plot_pass_at_k(runs, path, base)
    assert path.read_bytes()[:8] == PNG


def edit_results(run, edit):
    """Change a written results.json in place: edit(results) mutates it."""
    results = json.loads((run / "results.json").read_text())
    edit(results)
    (run / "results.json").write_text(json.dumps(results))


def test_length_histograms_pool_benchmarks_with_different_bin_edges(tmp_path):
    # lengths.length_histogram bins each benchmark from its own shortest to longest sample
    run = write_run(tmp_path / "run", {"math500": ([8, 4], 100), "aime24": ([8, 4], 100)}, n=8)

    def edit(results):
        results["benchmarks"]["math500"]["length_histogram"] = {
            "edges": [0.0, 10.0, 20.0], "correct": [2, 4], "incorrect": [0, 0],
            "easy": {"problems": 1, "correct": [2, 4], "incorrect": [0, 0]},
        }  # fmt: skip
        results["benchmarks"]["aime24"]["length_histogram"] = {
            "edges": [0.0, 20.0, 40.0], "correct": [6, 2], "incorrect": [1, 3],
            "easy": {"problems": 2, "correct": [6, 2], "incorrect": [1, 3]},
        }  # fmt: skip

    edit_results(run, edit)
    fig = plot_length_histograms(find_runs([run]), tmp_path / "h.png")
    correct = fig.axes[0].patches[0].get_data()
    assert list(correct.edges) == [0, 20, 40]  # one set of edges spanning both benchmarks
    assert list(correct.values) == [12, 2]  # math500's [0, 10), [10, 20) both fall in [0, 20)
    assert [a.get_title() for a in fig.axes] == ["run: all problems", "run: easy problems (3)"]


def test_overall_budget_curve_from_benchmarks_with_different_budgets(tmp_path):
    # lengths.default_budgets ends each benchmark's budgets at its longest response
    run = write_run(tmp_path / "run", {"math500": ([8, 4], 1000), "aime24": ([8, 4], 3000)}, n=8)

    def edit(results):
        results["benchmarks"]["math500"]["budget_curve"] = {
            "budgets": [256, 512, 1024, 1500], "accuracy": [0.1, 0.2, 0.5, 0.6], "accuracy_se": [0.1] * 4}  # fmt: skip
        results["benchmarks"]["aime24"]["budget_curve"] = {
            "budgets": [256, 512, 1024, 2048, 4000], "accuracy": [0.0, 0.1, 0.2, 0.3, 0.4],
            "accuracy_se": [0.1] * 5}  # fmt: skip

    edit_results(run, edit)
    fig = plot_budget_curves(find_runs([run]), tmp_path / "b.png")
    overall = fig.axes[2].get_lines()[0]
    # 1500 is not one of aime24's budgets (and below its last): left out; past 1500 math500 stays at 0.6
    assert list(overall.get_xdata()) == [256, 512, 1024, 2048, 4000]
    assert list(overall.get_ydata()) == pytest.approx([5, 15, 35, 45, 50])
    assert texts(fig.axes[2].get_xticklabels())[-1] == "4k"


def test_table5_warns_when_latencies_come_from_different_gpus(tmp_path):
    a = write_scaling(tmp_path / "a", "a", {"aime24": [(1, 0.3, 0.05, 3000, 20.0)]})
    b = write_scaling(tmp_path / "b", "b", {"aime24": [(1, 0.3, 0.05, 3000, 20.0)]}, temperature=1.0)
    for run, gpus in ((a, ["NVIDIA H100"]), (b, ["NVIDIA A100"])):
        data = json.loads((run / "scaling.json").read_text())
        data["protocol"]["hardware"] = {"gpus": gpus}
        (run / "scaling.json").write_text(json.dumps(data))
    w = protocol_warnings(find_runs([a, b]))
    assert "Table 5: runs differ in GPUs (latencies are not comparable): NVIDIA A100 (b); NVIDIA H100 (a)" in w
    assert "Table 5: runs differ in temperature: 0.6 (a); 1 (b)" in w


def test_report_on_the_output_of_dler_eval_metrics(tmp_path):
    """The fields as dler.eval.metrics and run.py write them (summarize, overall, the per-problem CSV)."""
    from dler.eval import metrics as M
    from dler.eval.store import write_problem_csv

    def records(solved, n, length):
        return [
            {"benchmark": "aime24", "index": i, "correct": [1.0] * c + [0.0] * (n - c),
             "extracted": ["1"] * c + ["2"] * (n - c), "tokens": [length + 37 * j for j in range(n)],
             "truncated": [False] * n}
            for i, c in enumerate(solved)
        ]  # fmt: skip

    for name, solved, length in (("base", [0, 1, 2, 8, 3, 0], 6000), ("rl", [4, 5, 8, 8, 6, 1], 1500)):
        recs = records(solved, 8, length)
        per = {"aime24": M.summarize(recs)}
        run = tmp_path / name
        (run / "generations").mkdir(parents=True)
        write_problem_csv(run / "generations" / "aime24.csv", recs)
        protocol = {"model": name, "backend": "vllm", "prompt_template": TEMPLATE,
                    "sampling": {"n": 8, "temperature": 0.6, "top_p": 0.95, "max_tokens": 32768, "seed": 0}}  # fmt: skip
        (run / "results.json").write_text(
            json.dumps({"protocol": protocol, "benchmarks": per, "overall": M.overall(per)})
        )
    out = tmp_path / "out"
    text = report([tmp_path / "rl"], baseline=tmp_path / "base", output=out).read_text()
    assert "| base (baseline) | 29.2 ± 15.4 |" in text
    assert "| rl | aime24 | 6 | 29.17 | 66.67 | **+37.5** | 11.2 |" in text
    assert {p.name for p in out.glob("*.png")} == set(PLOTS) | {"budget_curves.png", "length_histograms.png"}
