"""A new user's first hour (issue 24): a recipe's `--help` in a second, without torch, and CPU threads that keep a
busy laptop usable (`dler.cpu_threads`)."""

import ast
import contextlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dler.cpu_threads import idle_fractions, on_cpu_machine, read_proc_stat, threads_for
from dler.recipe_help import NotStatic, names_of, static_field, static_help_parser, wants_short_help

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "recipes" / "dler_tiny.py")
ENV = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
ENV.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")


# ---------------------------------------------------------------- --help from the sources
def field_of(source: str, module: str = "dler.config"):
    statement = ast.parse(textwrap.dedent(source)).body[0]
    return static_field(statement, module)


def test_fields_are_read_from_their_source_and_anything_computed_is_refused():
    name, kind, f = field_of('x: int | None = field(default=3, metadata={"help": "h", "choices": [1, 3]})')
    assert (name, kind, f.default, dict(f.metadata)) == ("x", int | None, 3, {"help": "h", "choices": [1, 3]})
    name, kind, f = field_of("y: list[str] = field(default_factory=lambda: ['a'])")
    assert (kind, f.default_factory()) == (list[str], ["a"])
    assert field_of("z: Optional[bool] = None")[1] == bool | None
    assert field_of("w: int = field(default=0, init=False)") is None
    # `list(NAME)` of a dler constant, followed through its import (config -> config_checks -> kl: a dict's keys)
    _, _, f = field_of('k: str = field(default="k2", metadata={"choices": list(KL_ESTIMATORS)})')
    assert f.metadata["choices"] == ["k2", "low_var_kl", "k3"]
    assert names_of("dler.config_checks", "EXHAUSTED_ACTIONS") == ["error", "partial"]
    for computed in (
        "a: int = field(default=compute())",
        "b: SchedulerType = 'linear'",
        "c: str = field(default='x', metadata={'help': HELP})",
        "d: list = field(default_factory=make)",
    ):
        with pytest.raises(NotStatic):
            field_of(computed)


def test_short_help_equals_the_one_built_from_the_real_classes(monkeypatch):
    from dler.demo.tiny import DEFAULTS
    from dler.recipe import ScriptArguments, run
    from dler.recipe_cli import ESSENTIAL

    monkeypatch.setenv("COLUMNS", "100")
    fast = static_help_parser(DEFAULTS, ESSENTIAL, ScriptArguments)
    assert fast is not None, "a field of DLERConfig or an essential TRL one is not static any more"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        run(DEFAULTS, ["--help"])  # the real classes: DLERConfig, TRL's GRPOConfig, transformers' TrainingArguments
    assert fast.format_help() == printed.getvalue()
    assert "\n  --truncation_length" in printed.getvalue() and "\n  --model_name_or_path" in printed.getvalue()
    assert wants_short_help(["--help"]) and wants_short_help(["-h", "--seed", "1"])
    assert not wants_short_help(["--help", "--help-all"]) and not wants_short_help(["--dry-run"])


def test_help_loads_no_torch_and_lists_dlers_settings(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", TINY, "--help"], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(
        m for m in imported if m.split(".")[0] in ("torch", "transformers") or m == "trl.trainer.grpo_config"
    )
    assert not heavy, f"--help imported {heavy[:5]}"
    assert "\n  --truncation_length" in proc.stdout and "\n  --penalty " in proc.stdout
    assert "\n  --model_name_or_path" in proc.stdout and "`--help-all` lists them" in proc.stdout
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- CPU threads
def test_threads_follow_the_free_cores_by_hand():
    assert threads_for(2.0, 2) == 2  # idle laptop
    assert threads_for(1.0, 2) == 1  # one core busy
    assert threads_for(1.4, 2) == 1 and threads_for(1.5, 2) == 2  # to the nearest core
    assert threads_for(0.1, 2) == 1  # never fewer than one
    assert threads_for(7.9, 4) == 4  # never more than the usable cores
    before = {0: (100, 200), 1: (50, 100), 2: (0, 0)}
    after = {0: (150, 300), 1: (50, 200), 2: (0, 0)}
    assert idle_fractions(before, after) == {0: 0.5, 1: 0.0, 2: 1.0}  # no time passed: counted idle


def test_proc_stat_is_read_per_cpu_with_iowait_as_idle(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 10 100 5 0 0 0 0 0\ncpu0 1 2 3 40 5 6 7 8 0 0\ncpu1 10 0 0 10 0 0 0 0 0 0\nintr 123\n")
    assert read_proc_stat(str(stat)) == {0: (45, 72), 1: (10, 20)}
    assert read_proc_stat(str(tmp_path / "none")) == {}


def test_a_cpu_run_is_recognised_before_torch_loads(monkeypatch):
    assert on_cpu_machine(["--use_cpu", "true"]) and on_cpu_machine(["--use_cpu"]) and on_cpu_machine(["--use_cpu=1"])
    assert not on_cpu_machine(["--use_cpu", "false", "--seed", "1"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert on_cpu_machine([])


CHILD = """
import os, sys
from dler import cpu_threads

cpu_threads.free_cores = lambda sample_s=0.1: (1.0, 2, "1.0 of 2 cores idle (fake)")
prepare = cpu_threads.for_cpu_run(["--use_cpu", "true"])  # a recipe's main, before torch loads
import torch  # as parsing the settings does

prepare()  # once the settings are parsed and the run will train
print(torch.get_num_threads(), torch.get_num_interop_threads(), os.environ["OMP_WAIT_POLICY"], flush=True)
torch.set_num_threads(2)  # the caller's choice, once torch is loaded, is kept
print(cpu_threads.configure().line, torch.get_num_threads(), flush=True)
os.environ["OMP_NUM_THREADS"] = "2"
print(cpu_threads.configure(None).line, flush=True)
print(cpu_threads.configure(3).line, torch.get_num_threads(), flush=True)
"""


def test_one_thread_per_free_core_sleeping_openmp_and_the_users_choices_kept():
    proc = subprocess.run([sys.executable, "-c", CHILD], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chosen, kept, omp, requested = proc.stdout.splitlines()
    assert proc.stderr.strip().splitlines()[-1] == (
        "CPU threads: 1 intra-op, 1 inter-op (1.0 of 2 cores idle (fake)); "
        "OpenMP threads sleep while waiting (OMP_WAIT_POLICY=PASSIVE)"
    )
    assert chosen == "1 1 PASSIVE"
    assert kept == (
        "CPU threads: 2 intra-op (left as they were: torch was loaded before); OpenMP wait policy unchanged "
        "(torch was loaded before; it is read when OpenMP starts) 2"
    )
    assert omp.startswith("CPU threads: 2 intra-op (OMP_NUM_THREADS=2 is yours)")
    assert requested.startswith("CPU threads: 3 intra-op (as requested)") and requested.endswith(" 3")
