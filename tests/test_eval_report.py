"""dler report: Table 1 with the length cut, the analysis tables, and the plots (written and non-empty)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))

from dler.eval.metrics import overall, summarize  # noqa: E402
from dler.eval.report import PLOTS, ReportError, find_runs, report, table1  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def records(pass_rate, length, problems=4, n=4):
    """Graded records: the first round(pass_rate * n) samples of each problem are right."""
    right = round(pass_rate * n)
    return [
        {
            "correct": [1.0] * right + [0.0] * (n - right),
            "tokens": [length - 10] * right + [length + 10] * (n - right),
            "truncated": [False] * (n - 1) + [True],
            "extracted": ["1"] * right + ["2"] * (n - right),
        }
        for _ in range(problems)
    ]


def write_run(path, model, temperature, per_benchmark, n=4, max_tokens=32768):
    """A run directory as `dler eval` leaves it (results.json), from (pass rate, length) per benchmark."""
    benchmarks = {name: summarize(records(p, length, n=n)) for name, (p, length) in per_benchmark.items()}
    results = {
        "protocol": {
            "model": model, "backend": "vllm",
            "sampling": {"n": n, "temperature": temperature, "top_p": 0.95, "max_tokens": max_tokens, "seed": 0},
            "versions": {"dler": "0.1.0", "vllm": "0.29.0"},
            "benchmarks": {name: {"content_sha256": f"sha-{name}"} for name in per_benchmark},
        },
        "benchmarks": benchmarks,
        "overall": overall(benchmarks),
    }  # fmt: skip
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    return path


@pytest.fixture
def runs(tmp_path):
    base = write_run(tmp_path / "r1-1.5b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 0.6,
                     {"math500": (0.75, 4000), "aime24": (0.25, 12000)})  # fmt: skip
    dler = write_run(tmp_path / "dler-1.5b", "runs/dler", 0.6, {"math500": (0.75, 1000), "aime24": (0.5, 3000)})
    write_run(tmp_path / "sweep" / "t0", "runs/dler", 0.0, {"math500": (1.0, 900), "aime24": (0.0, 2500)}, n=1)
    write_run(tmp_path / "sweep" / "t0.6", "runs/dler", 0.6, {"math500": (0.75, 1000), "aime24": (0.5, 3000)})
    return base, dler, tmp_path / "sweep"


def test_table1_accuracy_average_length_and_length_cut(runs):
    base, dler, _ = runs
    found = find_runs([base, dler])
    text = table1(found, baseline=found[0])
    header, rule, row_base, row_dler = text.splitlines()[:4]
    assert header == "| run | math500 | aime24 | avg | avg length | length cut |"
    assert row_base == "| r1-1.5b (baseline) | 75.00 | 25.00 | 50.00 | 8,000 | — |"
    # lengths: base (3995 + 12005) / 2 = 8000; dler (995 + 3000) / 2 = 1997.5, i.e. -75.03%
    assert row_dler == "| dler-1.5b | 75.00 | 50.00 | 62.50 | 1,998 | -75.0% |"


def test_report_writes_tables_and_non_empty_plots(runs, tmp_path):
    base, dler, sweep = runs
    out = tmp_path / "report"
    path = report([dler, sweep], baseline=base, output=out)
    text = path.read_text()
    assert "## Table 1" in text and "-75.0%" in text
    assert "## Temperature sweep" in text and "pass@1 T=0" in text
    assert "## Length by correctness" in text and "acc / 1k tokens" in text
    assert "| sweep/t0 | pass@k | 50.00 | — | — |" in text
    assert "**Warning" not in text  # the greedy run's single sample is not a difference in n
    for name in PLOTS:
        png = out / name
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 1000, name
        assert f"]({name})" in text


def test_report_flags_runs_evaluated_differently(runs, tmp_path):
    base, dler, _ = runs
    short = write_run(tmp_path / "short", "m", 0.6, {"math500": (0.5, 100)}, max_tokens=4096)
    text = report([base, short], output=tmp_path / "out", plots=False).read_text()
    assert "runs differ in max_tokens: [4096, 32768]" in text
    assert not list((tmp_path / "out").glob("*.png"))


def test_sweep_folders_expand_in_temperature_order_with_labels(runs):
    _, _, sweep = runs
    found = find_runs([sweep])
    assert [r.label for r in found] == ["sweep/t0", "sweep/t0.6"]
    assert [r.sampling["temperature"] for r in found] == [0.0, 0.6]


def test_report_errors(tmp_path, runs):
    with pytest.raises(ReportError, match="no results.json"):
        find_runs([tmp_path / "missing"])
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "protocol.json").write_text("{}")
    with pytest.raises(ReportError, match="unfinished run"):
        find_runs([tmp_path / "unfinished"])
    _, dler, sweep = runs
    with pytest.raises(ReportError, match="--baseline must be one run"):
        report([dler], baseline=sweep, output=tmp_path / "x")


def test_default_output_is_the_run_directory(runs):
    _, dler, _ = runs
    path = report([dler], plots=False)
    assert path == dler / "report.md" and "dler-1.5b" in path.read_text()
