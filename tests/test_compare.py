"""`dler compare`: coverage and containment on hand-written generations CSVs, the accuracy histogram's bins and drawn
bars, compare.md and the command's one-line errors."""

import json

import pytest

from dler import cli
from dler.eval.compare import (
    accuracy_bin,
    accuracy_bin_labels,
    accuracy_histogram,
    compare,
    coverage,
    plot_accuracy_histograms,
)
from dler.eval.run_folders import find_runs


def write_run(path, benchmarks, model="m"):
    """A finished run folder: results.json, and generations/<benchmark>.csv with one row per (index, correct, n)."""
    (path / "generations").mkdir(parents=True)
    results = {"protocol": {"model": model, "sampling": {"temperature": 0.6}}, "benchmarks": {}}
    for name, rows in benchmarks.items():
        lines = ["benchmark,index,samples,correct,mean_correct,mean_length,truncated"]
        lines += [f"{name},{i},{n},{c},{c / n},10.0,0" for i, c, n in rows]
        (path / "generations" / f"{name}.csv").write_text("\n".join(lines) + "\n")
        results["benchmarks"][name] = {"pass@1": 0.5, "n": rows[0][2], "num_problems": len(rows)}
    (path / "results.json").write_text(json.dumps(results))
    return path


# problem index -> correct samples of 4: A solves 0, 1, 2, 4; B solves 1, 2, 3; neither solves 5
A_MATH = [(0, 1, 4), (1, 4, 4), (2, 2, 4), (3, 0, 4), (4, 3, 4), (5, 0, 4)]
B_MATH = [(0, 0, 4), (1, 1, 4), (2, 4, 4), (3, 2, 4), (4, 0, 4), (5, 0, 4)]


@pytest.fixture
def runs(tmp_path):
    a = write_run(tmp_path / "base", {"math500": A_MATH, "amc": [(0, 1, 4), (1, 0, 4)]})
    b = write_run(tmp_path / "rl", {"math500": B_MATH, "amc": [(0, 2, 4), (2, 1, 4)]})
    return a, b


def per_problem(path, benchmark):
    return find_runs([path])[0].per_problem(benchmark)


def test_coverage_by_hand(runs):
    a, b = runs
    c = coverage("math500", per_problem(a, "math500"), per_problem(b, "math500"))
    assert (c.only_a, c.only_b, c.both, c.neither) == ((0, 4), (3,), (1, 2), (5,))
    assert (c.shared, c.solved_a, c.solved_b, c.dropped) == (6, 4, 3, 0)
    assert not c.a_contains_b and not c.b_contains_a and c.same_n
    # amc: only problem 0 is shared (1 is A's, 2 is B's): both solve it, so each set contains the other
    c = coverage("amc", per_problem(a, "amc"), per_problem(b, "amc"))
    assert (c.only_a, c.only_b, c.both, c.neither, c.dropped) == ((), (), (0,), (), 2)
    assert c.a_contains_b and c.b_contains_a


def test_containment_holds_when_one_set_is_a_subset():
    a = {0: (4, 0.25), 1: (4, 1.0), 2: (4, 0.0)}
    b = {0: (4, 0.0), 1: (4, 0.5), 2: (4, 0.0)}
    c = coverage("x", a, b)
    assert c.a_contains_b and not c.b_contains_a and c.only_a == (0,)


def test_accuracy_bins_by_hand():
    assert accuracy_bin_labels(10) == ["0", "(0, 0.1)", "[0.1, 0.2)", "[0.2, 0.3)", "[0.3, 0.4)", "[0.4, 0.5)",
                                       "[0.5, 0.6)", "[0.6, 0.7)", "[0.7, 0.8)", "[0.8, 0.9)", "[0.9, 1)", "1"]  # fmt: skip
    cases = {(0, 4): 0, (4, 4): 11, (1, 4): 3, (2, 4): 6, (3, 10): 4, (1, 20): 1, (19, 20): 10, (7, 10): 8}
    for (c, n), expected in cases.items():
        assert accuracy_bin(c, n) == expected, (c, n)
    assert accuracy_bin(1, 2, bins=2) == 2 and accuracy_bin(1, 3, bins=2) == 1
    with pytest.raises(ValueError, match="correct <= samples"):
        accuracy_bin(5, 4)
    # A: 1/4, 4/4, 2/4, 0/4, 3/4, 0/4; B: 0/4, 1/4, 4/4, 2/4, 0/4, 0/4
    rows_a = {i: (n, c / n) for i, c, n in A_MATH}
    rows_b = {i: (n, c / n) for i, c, n in B_MATH}
    assert accuracy_histogram(rows_a, list(range(6))) == [2, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1]
    assert accuracy_histogram(rows_b, list(range(6))) == [3, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1]


def test_histogram_bars_side_by_side(tmp_path):
    ha, hb = [2, 0, 1, 3], [0, 1, 4, 1]
    fig = plot_accuracy_histograms({"math500": (ha, hb), "amc": ([1, 0, 0, 0], [0, 0, 0, 1])}, ("A: x", "B: y"),
                                   tmp_path / "h.png")  # fmt: skip
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "math500 (6 problems)",
        "amc (1 problem)",
        "all benchmarks (7 problems)",
    ]
    bars = axes[0].patches
    assert [p.get_height() for p in bars] == ha + hb
    assert [round(p.get_x() + p.get_width() / 2, 6) for p in bars] == [-0.2, 0.8, 1.8, 2.8, 0.2, 1.2, 2.2, 3.2]
    assert [p.get_height() for p in axes[2].patches] == [3, 0, 1, 3, 0, 1, 4, 2]  # pooled
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["0", "(0, 0.5)", "[0.5, 1)", "1"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["A: x", "B: y"]
    assert (tmp_path / "h.png").stat().st_size > 0


def test_compare_writes_the_table_histograms_and_found_perplexities(runs, tmp_path):
    a, b = runs
    ppl = b / "ppl_under_base"
    ppl.mkdir()
    summary = {"model": "base-model", "responses": str(b.resolve()), "responses_model": "m",
               "benchmarks": {"math500": {"responses": 24, "tokens": 240, "ppl": 1.5, "ppl_response_median": 1.4,
                                          "ppl_response_mean": 1.6}}}  # fmt: skip
    (ppl / "perplexity.json").write_text(json.dumps(summary))
    path = compare(a, b, tmp_path / "out")
    text = path.read_text()
    assert "| math500 | 6 | 4 / 4 | 4 | 3 | 2 | 1 | 2 | 1 | no (1: 3) | no (2: 0, 4) |" in text
    assert "| amc | 1 | 4 / 4 | 1 | 1 | 0 | 0 | 1 | 0 | yes | yes |" in text
    assert "| **all** | 7 |  | 5 | 4 | 2 | 1 | 3 | 1 | no (1) | no (2) |" in text
    assert "left out: amc (2)" in text and "Warning" not in text
    for table in text.split("\n\n"):  # every row of a table has the header's columns
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert len({line.count(" | ") if "---" not in line else line.count("|") - 2 for line in rows}) <= 1, table
    assert "| B: rl | base-model | math500 | 24 | 240 | 1.500 | 1.400 | 1.600 |" in text
    data = json.loads((tmp_path / "out" / "accuracy_histograms.json").read_text())
    assert data["benchmarks"]["math500"] == {"A": [2, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1],
                                             "B": [3, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1]}  # fmt: skip
    assert (tmp_path / "out" / "accuracy_histograms.png").stat().st_size > 0


def test_different_sample_counts_are_flagged(tmp_path):
    a = write_run(tmp_path / "a", {"math500": [(0, 1, 8), (1, 0, 8)]})
    b = write_run(tmp_path / "b", {"math500": [(0, 1, 4), (1, 1, 4)]})
    text = compare(a, b, tmp_path / "out", plots=False).read_text()
    assert "| math500 | 2 | 8 / 4 |" in text and "different numbers of samples on math500" in text
    assert "accuracy_histograms" not in text


def test_compare_errors_are_one_line(runs, tmp_path, capsys):
    a, b = runs
    other = write_run(tmp_path / "other", {"aime24": [(0, 1, 4)]})
    sweep = tmp_path / "sweep"
    write_run(sweep / "t0", {"math500": A_MATH})
    write_run(sweep / "t0.6", {"math500": A_MATH})
    cases = [
        ([str(a), str(other)], "share no benchmark with per-problem generations"),
        ([str(a), str(a)], "are the same folder"),
        ([str(sweep), str(b)], "RUN_A"),
        ([str(a), str(b), "--perplexity", str(tmp_path)], "no perplexity.json there"),
        ([str(a), str(b), "--bins", "0"], "must be an integer >= 1"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            cli.main(["compare", *args, "--output", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1, err
