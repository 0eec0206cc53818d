"""Issue 24, slice A: what a new user reads and sees first. The README's Metrics table renders whole, the docs say
what the code computes (maj@k, parallel-thinking latency, soft_overlong's check), the model card of a training run
names its base model, and the length histograms count whole samples on axes that stop at 100 %."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import recipe_args
from test_eval_report import edit_results, write_run

from dler.eval.length_plots import _rebin, plot_budget_curves, plot_length_histograms
from dler.eval.lengths import expected_max
from dler.eval.majority import maj_at_k
from dler.eval.plots import (
    plot_accuracy_vs_length,
    plot_parallel_thinking,
    plot_pass_at_k,
    plot_pass_at_k_boundary,
    plot_test_time_scaling,
)
from dler.eval.run_folders import find_runs
from dler.run_logs import MODEL_CARD_FILE, base_model_text, name_base_model

ROOT = Path(__file__).resolve().parent.parent


def section(path: str, heading: str) -> str:
    """The text of one markdown section, from its heading to the next heading of any level."""
    text = (ROOT / path).read_text()
    start = text.index(heading)
    end = re.search(r"\n#+ ", text[start + len(heading) :])
    return text[start : start + len(heading) + end.start()] if end else text[start:]


# ---------------------------------------------------------------- docs
def test_readme_metrics_table_is_one_table():
    body = section("README.md", "### Metrics")
    lines = body.splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith("|")]
    assert rows == list(range(rows[0], rows[-1] + 1)), "a blank or other line splits the Metrics table"
    table = "\n".join(lines[rows[0] : rows[-1] + 1])
    for metric in ("dynamic_sampling/partial_batch", "dler/prompt_truncated_frac", "dler/kl_k2", "eval_dler/accuracy"):
        assert metric in table


def table_row(path: str, key: str) -> str:
    (row,) = [line for line in (ROOT / path).read_text().splitlines() if line.startswith(f"| `{key}` |")]
    return row


def test_evaluation_doc_defines_maj_at_k_and_latency_as_the_code_computes_them():
    maj = table_row("docs/evaluation.md", "maj@k")
    assert "first k" not in maj and "seen first" not in maj
    assert "without replacement" in maj and "2-2 tie of a right and a wrong answer scores 0.5" in maj
    # by hand: one right and one wrong answer, k = 2 -> a tie -> 0.5; k = 1 -> half the draws are right -> 0.5;
    # two right + one wrong, k = 2: subsets {R,R} 1, {R,W} x2 ties 0.5 -> (1 + 0.5 + 0.5) / 3
    assert maj_at_k([(1, True), (1, False)], 0, [1, 2]) == {1: 0.5, 2: 0.5}
    assert maj_at_k([(2, True), (1, False)], 0, [2])[2] == pytest.approx(2 / 3)
    latency = table_row("docs/evaluation.md", "parallel_thinking")
    assert "first k" not in latency and "expected longest of k samples drawn without replacement" in latency
    # lengths 1, 2, 3, k = 2: subsets {1,2} -> 2, {1,3} -> 3, {2,3} -> 3: mean 8/3 (the first two alone: 2)
    assert expected_max([1, 2, 3], 2) == pytest.approx(8 / 3)


def test_soft_overlong_buffer_fails_when_the_config_is_built_as_the_doc_says(tmp_path):
    from dler import DLERConfig

    doc = (ROOT / "docs/penalties.md").read_text()
    assert "first call fails" not in doc and "building `DLERConfig` fails (before any model loads)" in doc
    with pytest.raises(ValueError, match=r'buffer B=4096 exceeds Lmax=4000.*"buffer": 1000'):
        DLERConfig(output_dir=str(tmp_path), penalty="soft_overlong", max_completion_length=4000, use_cpu=True)


# ---------------------------------------------------------------- model card
TRL_CARD = """---
library_name: transformers
model_name: out
---

# Model Card for out

This model is a fine-tuned version of [None](https://huggingface.co/None).

generator = pipeline("text-generation", model="None", device_map="auto")
"""


def test_the_card_names_a_local_base_model_and_the_hub_model_it_came_from(tmp_path):
    parent = tmp_path / "dler-run"
    parent.mkdir()
    (parent / MODEL_CARD_FILE).write_text("---\nbase_model: org/base-7b\n---\n\n# card\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MODEL_CARD_FILE).write_text(TRL_CARD)
    name_base_model(str(tmp_path / "out"), str(parent))
    card = (tmp_path / "out" / MODEL_CARD_FILE).read_text()
    assert "None" not in card
    assert (
        f"fine-tuned version of the local model `{parent}` (itself a fine-tuned version of "
        "[org/base-7b](https://huggingface.co/org/base-7b))." in card
    )
    assert f'model="{tmp_path / "out"}"' in card
    assert base_model_text("") == "a model whose name or path was not recorded"
    named = TRL_CARD.replace("[None](https://huggingface.co/None)", "[org/m](https://huggingface.co/org/m)")
    (tmp_path / "out" / MODEL_CARD_FILE).write_text(named)
    name_base_model(str(tmp_path / "out"), "org/m")
    assert "[org/m](https://huggingface.co/org/m)" in (tmp_path / "out" / MODEL_CARD_FILE).read_text()


@pytest.mark.slow
def test_a_recipe_run_from_a_local_model_names_it_in_its_model_card(tiny_model_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{a} + {a}?", "answer": str(2 * a)}) + "\n" for a in range(8)))
    out = tmp_path / "out"
    argv = recipe_args(tiny_model_dir, data, out, use_cpu="true", bf16="false", dynamic_sampling="false",
                       max_steps=1, save_strategy="steps", save_steps=1)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "dler_tiny.py"), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    card = (out / MODEL_CARD_FILE).read_text()
    assert "huggingface.co/None" not in card and 'model="None"' not in card
    assert f"This model is a fine-tuned version of the local model `{tiny_model_dir}`." in card
    assert f'pipeline("text-generation", model="{out}"' in card


# ---------------------------------------------------------------- plots
def test_pooled_histogram_counts_are_whole_samples(tmp_path):
    # math500 bins [0, 30), [30, 60] and aime24 bins of 20 tokens: pooled onto [0, 20, 40, 60]. Each math500 bin goes
    # whole to the pooled bin holding its midpoint (15 -> [0, 20), 45 -> [40, 60]); spreading by overlap would
    # draw 3 x 2/3 + ... = fractional samples.
    assert _rebin([3, 1], [0.0, 30.0, 60.0], [0.0, 20.0, 40.0, 60.0]) == [3, 0, 1]
    assert _rebin([2, 5], [7.0, 7.0, 7.0], [0.0, 20.0, 40.0]) == [7, 0]  # one length: zero-width bins
    run = write_run(tmp_path / "run", {"math500": ([8, 4], 100), "aime24": ([8, 4], 100)}, n=8)

    def edit(results):
        results["benchmarks"]["math500"]["length_histogram"] = {
            "edges": [0.0, 30.0, 60.0], "correct": [3, 1], "incorrect": [1, 0]}  # fmt: skip
        results["benchmarks"]["aime24"]["length_histogram"] = {
            "edges": [0.0, 20.0, 40.0, 60.0], "correct": [1, 1, 1], "incorrect": [0, 2, 0]}  # fmt: skip

    edit_results(run, edit)
    fig = plot_length_histograms(find_runs([run]), tmp_path / "h.png")
    ax = fig.axes[0]
    drawn = [list(p.get_data().values) for p in ax.patches]
    assert drawn == [[4, 1, 2], [4, 1, 2], [1, 2, 0], [1, 2, 0]]  # correct (fill, outline), incorrect (fill, outline)
    assert all(float(v).is_integer() for values in drawn for v in values)
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert all(float(t).is_integer() for t in ticks) and ax.get_ylabel() == "samples"


def test_percentage_axes_stop_at_100(tmp_path):
    from test_eval_report import write_scaling

    solved = write_run(tmp_path / "solved", {"aime24": ([4, 4, 4, 4], 2000)}, n=4)
    write_scaling(solved, "solved", {"aime24": [(1, 1.0, 0.0, 2000, 20.0), (2, 1.0, 0.0, 2000, 30.0)]})
    runs = find_runs([solved])
    for plot in (plot_accuracy_vs_length, plot_pass_at_k, plot_pass_at_k_boundary, plot_parallel_thinking,
                 plot_budget_curves, plot_test_time_scaling):  # fmt: skip
        fig = plot(runs, tmp_path / "p.png")
        for ax in fig.axes:
            if "%" not in ax.get_ylabel():
                continue
            assert ax.get_ylim()[1] == 100, (plot.__name__, ax.get_ylim())
            assert max(t for t in ax.get_yticks() if t <= ax.get_ylim()[1]) <= 100, plot.__name__
            assert all(not line.get_clip_on() for line in ax.get_lines()), plot.__name__  # whole markers at 100
