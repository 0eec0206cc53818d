"""Curves over training: `dler eval --checkpoints` (a sweep over a run's checkpoints, resumable), the report's
accuracy / length / truncation curves against step, and the training metrics of metrics.jsonl."""

import json
import shutil
from pathlib import Path

import pytest

from dler import cli
from dler.eval import checkpoints as C
from dler.eval import curves as V
from dler.eval import metrics as M
from dler.eval import training_plots as T
from dler.eval.errors import EvalSettingsError
from dler.eval.run_folders import find_runs

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def fake_model(folder: Path) -> Path:
    """A folder that looks like a saved model (the sweep's checks read files only)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x")
    return folder


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    return info.value.code, capsys.readouterr().err


# --- finding the checkpoints ---------------------------------------------------------------------------------------


def test_selection_is_all_or_sorted_steps():
    assert C.parse_selection("all") is None
    assert C.parse_selection("40,20,20") == [20, 40]
    with pytest.raises(ValueError, match="'all' or training steps"):
        C.parse_selection("last")


def test_checkpoints_oldest_first_with_the_final_model_at_its_own_step(tmp_path):
    run = tmp_path / "run"
    for step in (10, 2):
        fake_model(run / f"checkpoint-{step}")
    (run / "config.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"x")
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 12}))
    found = C.find_checkpoints(run)
    assert [(c.step, c.path.name, c.final) for c in found] == [(2, "checkpoint-2", False),
                                                                (10, "checkpoint-10", False), (12, "run", True)]  # fmt: skip
    assert [c.folder for c in found] == ["step-000002", "step-000010", "step-000012"]  # sort as steps do
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 10}))  # the same weights as checkpoint-10
    assert [(c.step, c.final) for c in C.find_checkpoints(run)] == [(2, False), (10, False)]
    assert [c.step for c in C.find_checkpoints(run, [10])] == [10]


def test_step_zero_is_the_starting_model_with_the_runs_prompt(tmp_path):
    from dler.eval.settings import EvalConfig
    from dler.prompts import get_format, prompt_settings
    from dler.runs import write_manifest

    start = fake_model(tmp_path / "sft")
    run = tmp_path / "run"
    fake_model(run / "checkpoint-5")
    settings = {"model_name_or_path": str(start), "prompt": prompt_settings(get_format("qwen-boxed"))}
    (run / "dler_run.json").write_text(json.dumps({"settings": settings}))
    write_manifest(str(run / "checkpoint-5"), 5)  # as training marks a whole checkpoint
    found = C.find_checkpoints(run)
    assert [(c.step, c.path, c.start) for c in found] == [(0, start, True), (5, run / "checkpoint-5", False)]
    assert [c.step for c in C.find_checkpoints(run, [5])] == [5]  # only when asked for (or "all")
    config = EvalConfig(model=str(run), output_dir=str(tmp_path / "out"))
    zero = C.start_prompt(config, run)
    assert zero.prompt_format == "qwen-boxed" and zero.prompt_template == get_format("qwen-boxed").user
    assert C.start_prompt(EvalConfig(model=str(run), output_dir="o", prompt_format="r1"), run).prompt_format == "r1"
    hub = {"model_name_or_path": "org/base-model"}  # a hub id: evaluated by name, checked by dler eval itself
    (run / "dler_run.json").write_text(json.dumps({"settings": hub}))
    assert C.find_checkpoints(run)[0].path == "org/base-model"


def test_checkpoint_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(EvalSettingsError, match=r"empty holds no checkpoint-N folders.*--save_steps"):
        C.find_checkpoints((tmp_path / "empty").mkdir() or tmp_path / "empty")
    run = tmp_path / "run"
    fake_model(run / "checkpoint-2")
    (run / "checkpoint-4").mkdir()
    (run / "checkpoint-4" / "config.json").write_text("{}")
    with pytest.raises(EvalSettingsError, match=r"checkpoint-4 holds no model weights.*--checkpoints 2$"):
        C.find_checkpoints(run)
    with pytest.raises(EvalSettingsError, match=r"no checkpoint of step 6; its steps: 2, 4"):
        C.find_checkpoints(run, [2, 6])
    (run / "dler_run.json").write_text("{}")  # a dler run marks whole checkpoints: checkpoint-2 has no manifest
    with pytest.raises(EvalSettingsError, match=r"checkpoint-2 no dler_complete.json: the save did not finish"):
        C.find_checkpoints(run, [2])


def test_the_command_line_refuses_before_loading_a_model(tmp_path, capsys, monkeypatch):
    import dler.eval.generate as G

    monkeypatch.setattr(G.TransformersBackend, "__init__", lambda *a, **k: pytest.fail("a model was loaded"))
    base = ["eval", "--output-dir", str(tmp_path / "out"), "--data-dir", str(FIXTURES), "--benchmarks", "math500",
            "--backend", "transformers"]  # fmt: skip
    (tmp_path / "empty").mkdir()
    code, err = run_cli([*base, "--model", str(tmp_path / "empty"), "--checkpoints", "all"], capsys)
    assert code == 2 and err.count("\n") == 1 and "empty holds no checkpoint-N folders" in err
    code, err = run_cli([*base, "--model", str(tmp_path / "empty"), "--checkpoints", "x"], capsys)
    assert code == 2 and "--checkpoints takes 'all' or training steps" in err
    fake_model(tmp_path / "run" / "checkpoint-1")
    code, err = run_cli([*base, "--model", str(tmp_path / "run"), "--checkpoints", "1", "--temperature", "0,0.6"],
                        capsys)  # fmt: skip
    assert code == 2 and "one temperature" in err
    assert not (tmp_path / "out").exists()


# --- the sweep on the tiny model -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_evaluates_each_checkpoint_then_skips_them_and_the_report_draws_them(
    tmp_path, tiny_model_dir, capsys, monkeypatch
):
    from dler.eval import run as R
    from dler.prompts import get_format, write_prompt_file

    run = tmp_path / "run"
    for step in (2, 4):
        shutil.copytree(tiny_model_dir, run / f"checkpoint-{step}")
    write_prompt_file(run / "checkpoint-4", get_format("qwen-boxed"))  # as training writes it
    out = tmp_path / "sweep"
    args = ["eval", "--model", str(run), "--checkpoints", "all", "--output-dir", str(out), "--data-dir",
            str(FIXTURES), "--benchmarks", "math500,amc", "--limit", "1", "--n", "2", "--max-tokens", "6",
            "--backend", "transformers", "--grader-workers", "0", "--no-progress"]  # fmt: skip
    calls = []
    evaluate = R.evaluate
    monkeypatch.setattr(R, "evaluate", lambda config, **kw: calls.append(config.model) or evaluate(config, **kw))
    assert cli.main(args) == 0
    assert calls == [str(run / "checkpoint-2"), str(run / "checkpoint-4")]  # oldest first
    assert "step 2: T=0.6 n=2" in capsys.readouterr().out
    for step, fmt in ((2, "r1"), (4, "qwen-boxed")):  # each checkpoint with its own prompt
        protocol = json.loads((out / f"step-{step:06d}" / "protocol.json").read_text())
        assert protocol["prompt"]["format"] == fmt
        assert json.loads((out / f"step-{step:06d}" / C.STEP_FILE).read_text())["step"] == step
    assert cli.main(args) == 0 and len(calls) == 2  # finished: skipped, nothing evaluated again

    record = out / "step-000004" / C.STEP_FILE  # an interrupted checkpoint resumes through dler eval's resume
    record.write_text(json.dumps({**json.loads(record.read_text()), "finished": False}))
    assert cli.main(args) == 0 and calls[2:] == [str(run / "checkpoint-4")]

    code, err = run_cli([*args[:-1], "--no-progress", "--n", "4"], capsys)  # other settings: refused, named
    assert code == 2 and "n: 2 -> 4" in err

    assert cli.main(["report", str(out), "--output", str(tmp_path / "report"), "--no-plots"]) == 0  # plots: below
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Curves over training" in text and "| 2 | `checkpoint-2` |" in text and "| 4 | `checkpoint-4` |" in text
    rows = (tmp_path / "report" / "curves.csv").read_text().splitlines()
    assert rows[0] == ",".join(V.CSV_COLUMNS) and len(rows) == 1 + 2 * 3  # 2 steps x (2 benchmarks + overall)


# --- the curves, from hand-written results -------------------------------------------------------------------------


def _bench(p, se, length, trunc):
    return {"pass@1": p, "pass@1_se": se, "mean_length": length, "truncation_rate": trunc, "pass@k": {"1": p},
            "maj@k": {"1": p}, "num_problems": 4, "n": 1,
            "parallel_thinking": [{"k": 1, "maj@k": p, "pass@k": p, "total_tokens": length,
                                   "latency_tokens": length}]}  # fmt: skip


def write_sweep(out: Path, points: dict[str, tuple[int, dict]]) -> Path:
    """A sweep folder with hand-written results: {folder name: (step, {benchmark: metrics})}."""
    out.mkdir(parents=True)
    (out / C.SWEEP_FILE).write_text(json.dumps({"run_dir": "run", "settings": {}, "steps": []}))
    for name, (step, benchmarks) in points.items():
        (out / name).mkdir()
        (out / name / C.STEP_FILE).write_text(json.dumps({"step": step, "model": f"run/checkpoint-{step}"}))
        overall = M.overall(benchmarks)
        results = {"protocol": {"model": f"run/checkpoint-{step}", "sampling": {"temperature": 0.6, "n": 1}},
                   "benchmarks": benchmarks, "overall": overall}  # fmt: skip
        (out / name / "results.json").write_text(json.dumps(results))
    return out


def test_curves_plot_and_table_hold_the_hand_written_numbers(tmp_path):
    # folder names that sort against the steps: the x axis follows the recorded step, not the name
    out = write_sweep(tmp_path / "sweep", {
        "b": (5, {"math500": _bench(0.5, 0.1, 1200.0, 0.02), "amc": _bench(0.25, 0.05, 2000.0, 0.1)}),
        "a": (50, {"math500": _bench(0.75, 0.1, 800.0, 0.0), "amc": _bench(0.5, 0.05, 1000.0, 0.0)}),
    })  # fmt: skip
    sweeps = V.find_sweeps(find_runs([out]))
    assert [(s.label, [step for step, _ in s.points]) for s in sweeps] == [("sweep", [5, 50])]
    fig = V.plot_curves(sweeps, tmp_path / "curves.png")
    acc, length, trunc = fig.axes[:3]
    lines = {ax.get_title(): {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.lines}
             for ax in (acc, length, trunc)}  # fmt: skip
    assert lines["Accuracy"]["math500"] == ([5, 50], [50.0, 75.0])
    assert lines["Accuracy"]["amc"] == ([5, 50], [25.0, 50.0])
    assert lines["Accuracy"]["overall"] == ([5, 50], [37.5, 62.5])  # (50 + 25) / 2, (75 + 50) / 2
    assert lines["Mean length"]["amc"] == ([5, 50], [2000.0, 1000.0])
    assert lines["Truncation rate"]["math500"] == ([5, 50], [2.0, 0.0])
    band = acc.collections[0].get_paths()[0].vertices  # math500 ± se: 40..60 at step 5, 65..85 at step 50
    assert {(round(x), round(y)) for x, y in band} >= {(5, 40), (5, 60), (50, 65), (50, 85)}
    table = V.curves_table(sweeps)
    assert "| 5 | `checkpoint-5` | 50.0 ± 10.0 · 1,200 tok · 2.0% cut | 25.0 ± 5.0 · 2,000 tok · 10.0% cut |" in table
    assert table.index("| 5 |") < table.index("| 50 |")


def test_the_report_adds_the_curves_only_for_a_sweep(tmp_path):
    from dler.eval.report import report

    out = write_sweep(tmp_path / "sweep", {"step-000001": (1, {"math500": _bench(0.5, 0.1, 10.0, 0.0)}),
                                           "step-000002": (2, {"math500": _bench(1.0, 0.0, 8.0, 0.0)})})  # fmt: skip
    path = report([out], output=tmp_path / "rep", plots=False)
    assert "## Curves over training" in path.read_text() and not (tmp_path / "rep" / V.CURVES_PNG).exists()
    assert (tmp_path / "rep" / V.CURVES_CSV).read_text().splitlines()[1:] == [
        "sweep,1,math500,0.5,0.1,10.0,0.0", "sweep,2,math500,1.0,0.0,8.0,0.0"]  # fmt: skip
    plain = tmp_path / "plain"  # an ordinary run: no curves section
    shutil.copytree(out / "step-000001", plain)
    (plain / C.STEP_FILE).unlink()
    assert "Curves over training" not in report([plain], output=tmp_path / "rep2", plots=False).read_text()


# --- training metrics ----------------------------------------------------------------------------------------------

METRICS = [
    {"step": 1, "dler/correctness": 0.25, "entropy": 0.5, "loss": 0.1, "dynamic_sampling/groups_kept": 2.0,
     "dynamic_sampling/groups_all_zero": 5.0, "dynamic_sampling/groups_all_positive": 1.0,
     "dynamic_sampling/groups_unscorable": 0.0},
    {"step": 2, "dler/correctness": 0.5, "entropy": 0.4, "clip_ratio/high_mean": "nan"},
    {"step": 2, "dler/correctness": 0.625},  # logged again at the same step: the last value wins
    {"step": 3, "dler/correctness": 0.9, "entropy": 0.3},  # the lost run, after its checkpoint at step 2
    {"step": 4, "dler/correctness": 0.95, "entropy": 0.2},
    {"event": "resume", "from_step": 2, "checkpoint": "out/checkpoint-2", "dropped_lines": 0},
    {"step": 3, "dler/correctness": 0.75, "entropy": 0.35, "dynamic_sampling/groups_kept": 0.0,
     "dynamic_sampling/groups_all_zero": 0.0, "dynamic_sampling/groups_all_positive": 0.0,
     "dynamic_sampling/groups_unscorable": 0.0},  # dynamic sampling off: no kept fraction
]  # fmt: skip


def write_metrics(folder: Path, cut_last_line: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(m) + "\n" for m in METRICS) + ('{"step": 4, "entr' if cut_last_line else "")
    (folder / "metrics.jsonl").write_text(text)
    return folder


def test_metrics_resume_marker_last_value_wins_and_counts(tmp_path):
    log = T.read_metrics(write_metrics(tmp_path / "out") / "metrics.jsonl")
    assert log.series["dler/correctness"] == {1: 0.25, 2: 0.625, 3: 0.75}  # step 4 of the lost run dropped
    assert log.series["entropy"] == {1: 0.5, 2: 0.4, 3: 0.35}
    assert log.series[T.KEPT] == {1: 0.25}  # 2 / (2 + 5 + 1 + 0); step 3 classified no group
    assert log.resumes == [2] and log.bad_lines == 1 and log.non_numeric == 1
    assert "loss" in log.unknown_keys() and "entropy" not in log.unknown_keys()
    assert T.kept_fraction({f"dynamic_sampling/groups_{c}": {7: v} for c, v in
                            zip(("kept", "all_zero", "all_positive", "unscorable"), (3, 1, 1, 1), strict=True)}) == {7: 0.5}  # fmt: skip


def test_training_plot_draws_the_logged_keys_against_step(tmp_path):
    log = T.read_metrics(write_metrics(tmp_path / "out") / "metrics.jsonl")
    fig = T.plot_training([log], tmp_path / "t.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Rollout correctness", "Dynamic sampling", "Entropy"]  # only panels with logged keys
    correct = fig.axes[0].lines[0]
    assert list(correct.get_xdata()) == [1, 2, 3] and list(correct.get_ydata()) == [25.0, 62.5, 75.0]
    assert list(fig.axes[1].lines[0].get_ydata()) == [25.0]
    resume_lines = [ln for ln in fig.axes[2].lines if ln.get_linestyle() == ":"]
    assert [list(ln.get_xdata()) for ln in resume_lines] == [[2, 2]]
    other = T.read_metrics(write_metrics(tmp_path / "other") / "metrics.jsonl")  # two runs: a colour each
    fig = T.plot_training([log, other], tmp_path / "two.png")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["out", "other"]
    assert [ln.get_color() for ln in fig.axes[0].lines[:2]] != [fig.axes[0].lines[0].get_color()] * 2


def test_report_reads_a_training_folder_and_refuses_one_without_metrics(tmp_path, capsys):
    run = write_metrics(tmp_path / "out")
    assert cli.main(["report", str(run), "--output", str(tmp_path / "rep")]) == 0  # auto-detected
    text = (tmp_path / "rep" / "report.md").read_text()
    assert text.startswith("# Training report") and "| out | Rollout correctness | training rollouts |" in text
    assert "62.5% (2)" not in text and "25.0% (1) | 75.0% (3)" in text and "resumed at step 2" in text
    assert "1 unreadable lines and 1 non-numeric values skipped" in text
    assert (tmp_path / "rep" / T.TRAINING_PNG).stat().st_size > 0
    csv_rows = (tmp_path / "rep" / T.TRAINING_CSV).read_text().splitlines()
    assert "out,dler/correctness,2,0.625" in csv_rows
    code, err = run_cli(["report", "--training", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "--training" in err and "no metrics.jsonl there" in err
    code, err = run_cli(["report"], capsys)
    assert code == 2 and "--training RUN_DIR" in err
