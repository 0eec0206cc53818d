"""`make demo`, shortened: the same pipeline (toy task, SFT warm start, evaluation, DLER through the toy recipe,
evaluation, report and plot) on one-digit additions with a few steps of each stage."""

import json
import runpy
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SHORT = [
    "--digits", "1",
    "--sft-steps", "150",
    "--sft-problems", "2400",
    "--rl-problems", "64",
    "--rl-steps", "8",
    "--rl-lr", "5e-4",
    "--eval-problems", "64",
    "--threads", "1",
]  # fmt: skip


LOGGERS = ("trl", "accelerate", "dler", "DeepSpeed")


def global_state():
    """What the demo changes while it runs and must give back: logging levels, verbosity, progress bars, threads."""
    import logging

    import datasets
    import torch
    import transformers

    return (
        [logging.getLogger(name).level for name in LOGGERS],
        transformers.logging.get_verbosity(),
        transformers.utils.logging.is_progress_bar_enabled(),
        datasets.logging.get_verbosity(),
        datasets.is_progress_bar_enabled(),
        torch.get_num_threads(),
    )


def set_global_state(state):
    import logging

    import datasets
    import torch
    import transformers

    levels, verbosity, bars, ds_verbosity, ds_bars, threads = state
    for name, level in zip(LOGGERS, levels, strict=True):
        logging.getLogger(name).setLevel(level)
    transformers.logging.set_verbosity(verbosity)
    (transformers.logging.enable_progress_bar if bars else transformers.logging.disable_progress_bar)()
    datasets.logging.set_verbosity(ds_verbosity)
    (datasets.enable_progress_bars if ds_bars else datasets.disable_progress_bars)()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    import logging

    from dler.demo.pipeline import main

    out = tmp_path_factory.mktemp("demo")
    original = global_state()
    # a caller's state that differs from everything the demo sets while it runs (ERROR, no bars, --threads 1)
    callers = ([logging.INFO] * len(LOGGERS), logging.INFO, True, logging.INFO, True, 2)
    set_global_state(callers)
    try:
        before = global_state()
        report = main([*SHORT, "--output-dir", str(out)])
        yield out, report, (before, global_state())
    finally:
        set_global_state(original)


def test_report_and_plot_are_written(short_run):
    out, report, _ = short_run
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    for side in ("before", "after"):
        assert {"accuracy", "mean_length", "problems"} <= set(on_disk[side])
        assert 0.0 <= on_disk[side]["accuracy"] <= 1.0 and on_disk[side]["mean_length"] > 0
    assert {"length_reduction", "accuracy_change", "targets", "settings", "history", "elapsed_s"} <= set(on_disk)
    settings = on_disk["settings"]
    assert settings["seed"] == 0 and settings["necessary_length"] < settings["budget"]
    assert on_disk["elapsed_s"]["total"] > 0
    png = out / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert (out / "sft" / "config.json").exists() and (out / "dler" / "config.json").exists()
    command = settings["dler_command"]
    assert command[:2] == ["python", "recipes/dler_tiny.py"], "the printed command reruns the DLER stage"
    assert command[command.index("--model_name_or_path") + 1] == str(out / "sft")
    from dler.demo.tiny import DEFAULTS

    recipe = runpy.run_path(str(Path(__file__).resolve().parent.parent / "recipes" / "dler_tiny.py"))
    assert recipe["DEFAULTS"] is DEFAULTS, "DLER trains with the tiny recipe's settings"


def test_pipeline_ran_end_to_end(short_run):
    _, report, _ = short_run
    before, after = report["before"], report["after"]
    assert before["mean_verify_lines"] > 0.5, "the warm-started model should be verbose"
    history = report["history"]
    assert len(history) >= 4 and all(0 <= h["accuracy"] <= 1 for h in history)
    assert history[0]["accuracy"] > 0, "some rollouts must be right, or no group carries signal"
    # the budget bites: the rollouts get shorter during DLER, and so do the held-out answers
    assert history[-1]["mean_length"] < history[0]["mean_length"]
    assert after["mean_length"] < before["mean_length"]
    assert report["length_reduction"] == pytest.approx(1 - after["mean_length"] / before["mean_length"])
    assert report["accuracy_change"] == pytest.approx(after["accuracy"] - before["accuracy"])


def test_same_seed_same_report(short_run, tmp_path):
    from dler.demo.pipeline import main

    reports = [short_run[1], main([*SHORT, "--output-dir", str(tmp_path)])]
    first, second = (
        {**r, "elapsed_s": None, "settings": {**r["settings"], "output_dir": None, "dler_command": None}}
        for r in reports
    )  # the timings and the output folder differ, nothing else may
    assert first["history"] and first == second


def test_the_callers_logging_and_threads_are_given_back(short_run):
    before, after = short_run[2]
    assert after == before


def test_the_demo_gives_one_duration_its_wall_time(capsys):
    """On given timings: each stage ends with the time since the start, the stages (library loading and the report
    included) add up to the total, and the last line is that total, written as the README writes it."""
    from dler.demo.console import Clock, format_duration

    assert [format_duration(s) for s in (0.4, 42, 59.6, 60, 222.0, 3725)] == [
        "0 s", "42 s", "1 min 00 s", "1 min 00 s", "3 min 42 s", "62 min 05 s"
    ]  # fmt: skip
    ticks = iter([100.0, 105.0, 106.2, 230.0, 250.4, 300.0, 321.3, 322.0])  # start, then each stage's end
    clock = Clock(now=lambda: next(ticks))
    clock.end("libraries", quiet=True)
    for name in ("setup", "sft", "eval_before", "dler", "eval_after"):
        clock.begin(f"[{name}]")
        clock.end(name)
    clock.end("report", quiet=True)
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if "done at" in line] == [
        "   (done at 6 s)", "   (done at 2 min 10 s)", "   (done at 2 min 30 s)", "   (done at 3 min 20 s)",
        "   (done at 3 min 41 s)",
    ]  # fmt: skip
    elapsed = clock.elapsed()
    assert elapsed == {
        "libraries": 5.0, "setup": 1.2, "sft": 123.8, "eval_before": 20.4, "dler": 49.6, "eval_after": 21.3,
        "report": 0.7, "total": 222.0,
    }  # fmt: skip
    assert sum(v for k, v in elapsed.items() if k != "total") == pytest.approx(elapsed["total"])
    assert clock.summary() == "Demo wall time: 3 min 42 s (library loading included; install not)"
