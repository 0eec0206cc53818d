"""Long runs as a user meets them: the recipe entry point in a subprocess, killed saves, restarts, a busy or reused
`output_dir`, plugins and mistakes on the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import recipe_args

from dler.runs import MANIFEST, RunLock, checkpoint_problem, find_resume_checkpoint, settings_differences

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "recipes" / "dler_tiny.py")


def problems(path, n=8):
    path.write_text("".join(json.dumps({"problem": f"{a} + {a}?", "answer": str(2 * a)}) + "\n" for a in range(n)))
    return path


def recipe(model_dir, tmp_path, *extra, cwd=None, **overrides):
    """`python recipes/dler_tiny.py ...` on the tiny model, as a user runs it; returns the finished process."""
    settings = dict(use_cpu="true", bf16="false", dynamic_sampling="false", max_steps=2, save_steps=1)
    settings["save_strategy"] = "steps"
    settings.update(overrides)
    output_dir = settings.pop("output_dir", tmp_path / "out")
    argv = recipe_args(model_dir, problems(tmp_path / "train.jsonl"), output_dir, **settings)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, TINY, *argv, *extra], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


# ---------------------------------------------------------------- pure parts
def test_manifest_spots_missing_and_truncated_files(tmp_path):
    from dler.runs import write_manifest

    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    assert checkpoint_problem(str(folder)) == f"no {MANIFEST}: the save did not finish"
    write_manifest(str(folder), 3)
    assert checkpoint_problem(str(folder)) is None
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    assert checkpoint_problem(str(folder)) == "model.safetensors has 10 bytes, 100 were written"
    (tmp_path / "checkpoint-1").mkdir()
    assert find_resume_checkpoint(str(tmp_path)) == (None, [("checkpoint-3", "model.safetensors has 10 bytes, 100 were written"), ("checkpoint-1", f"no {MANIFEST}: the save did not finish")])  # fmt: skip
    assert settings_differences({"lr": 1, "a": 2}, {"lr": 3, "a": 2, "b": 1}) == ["b: '(unset)' -> 1", "lr: 1 -> 3"]


def test_lock_keeps_a_second_run_out_and_dies_with_its_holder(tmp_path):
    with RunLock(str(tmp_path)):
        with pytest.raises(RuntimeError, match=rf"output_dir {tmp_path} is in use by pid {os.getpid()}"):
            RunLock(str(tmp_path)).__enter__()
    with RunLock(str(tmp_path)):  # released: the next run takes it
        pass


# ---------------------------------------------------------------- through the recipe
def test_restart_resumes_from_the_newest_whole_checkpoint_and_a_finished_run_trains_nothing(tiny_model_dir, tmp_path):
    ok(recipe(tiny_model_dir, tmp_path))
    out = tmp_path / "out"
    assert (out / "trainer_state.json").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 2
    # a job killed while saving checkpoint-2, then another killed as checkpoint-3 was created
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"truncated")
    (out / "checkpoint-3").mkdir()
    log = ok(recipe(tiny_model_dir, tmp_path, max_steps=3))
    assert f"Not resuming from checkpoint-3: no {MANIFEST}: the save did not finish" in log
    assert "Not resuming from checkpoint-2: model.safetensors has 9 bytes" in log
    assert f"Resuming from {out / 'checkpoint-1'} at step 1 of 3" in log
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3

    stamp = os.path.getmtime(out / "model.safetensors")
    log = ok(recipe(tiny_model_dir, tmp_path, max_steps=3))  # the same command again: the run is done
    assert "finished at step 3 of max_steps=3: nothing to train" in log
    assert os.path.getmtime(out / "model.safetensors") == stamp


def test_a_restart_with_other_settings_is_refused_naming_them(tiny_model_dir, tmp_path):
    ok(recipe(tiny_model_dir, tmp_path))
    proc = recipe(tiny_model_dir, tmp_path, max_steps=3, learning_rate=3e-4, penalty="cosine")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "learning_rate: 0.0001 -> 0.0003" in proc.stderr and "penalty: 'truncation' -> 'cosine'" in proc.stderr
    log = ok(recipe(tiny_model_dir, tmp_path, "--resume_with_changed_settings", max_steps=3, learning_rate=3e-4))
    assert "Resuming with changed settings" in log and "at step 2 of 3" in log


def test_a_run_recorded_before_the_newer_settings_resumes_unless_one_of_them_changed(tiny_model_dir, tmp_path):
    ok(recipe(tiny_model_dir, tmp_path))
    run_file = tmp_path / "out" / "dler_run.json"
    run = json.loads(run_file.read_text())
    for name in ("prompt", "correctness_rewards", "reward_weights", "multi_objective_aggregation", "scale_rewards"):
        del run["settings"][name]  # as an earlier dler wrote it
    run_file.write_text(json.dumps(run))
    proc = recipe(tiny_model_dir, tmp_path, max_steps=3, prompt_format="boxed")
    assert proc.returncode == 2 and "prompt:" in proc.stderr and "'format': 'r1'" in proc.stderr
    assert "at step 2 of 3" in ok(recipe(tiny_model_dir, tmp_path, max_steps=3))


def test_a_second_run_into_a_busy_output_dir_is_refused(tiny_model_dir, tmp_path):
    with RunLock(str(tmp_path / "out")):
        proc = recipe(tiny_model_dir, tmp_path)
    assert proc.returncode == 2 and f"is in use by pid {os.getpid()}" in proc.stderr
    assert not (tmp_path / "out" / "checkpoint-1").exists()


def readme_plugin() -> str:
    """The README's custom-penalty example, verbatim (the python block that registers "shorter")."""
    blocks = (ROOT / "README.md").read_text().split("```python\n")[1:]
    (block,) = [b.split("```")[0] for b in blocks if '@register_penalty("shorter")' in b]
    return block


def test_the_readme_plugin_trains_from_the_command_line(tiny_model_dir, tmp_path):
    (tmp_path / "my_penalties.py").write_text(readme_plugin())
    log = ok(recipe(tiny_model_dir, tmp_path, cwd=tmp_path, penalty_module="my_penalties", penalty="shorter"))
    assert json.loads((tmp_path / "out" / "trainer_state.json").read_text())["global_step"] == 2, log
    proc = recipe(tiny_model_dir, tmp_path, cwd=tmp_path, penalty="shorter", output_dir=tmp_path / "o2")
    assert proc.returncode == 2 and "unknown penalty" in proc.stderr.lower()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learning_rate": "fast"}, "invalid float value: 'fast'"),
        ({"penalty_kwargs": "{alpha: 1"}, "penalty_kwargs"),
        ({"num_generations": 3}, "2 prompts x 3 rollouts = 6 samples per update cannot be split"),
        ({"num_processes": 3}, "use a process count that divides"),
    ],
)
def test_command_line_mistakes_give_one_message_and_exit_2(tiny_model_dir, tmp_path, overrides, message):
    proc = recipe(tiny_model_dir, tmp_path, "--dry-run", **overrides)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr) < 2000
    assert "generation_batch_size" not in proc.stderr


def test_output_dir_that_is_a_file_fails_before_the_model_loads_and_traceback_on_request(tiny_model_dir, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    proc = recipe(tiny_model_dir, tmp_path)
    assert proc.returncode == 2 and f"output_dir {tmp_path / 'out'} is a file" in proc.stderr
    assert "Loading weights" not in proc.stderr
    proc = recipe(tiny_model_dir, tmp_path, "--traceback")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_too_few_usable_problems_stop_before_the_model_loads(tiny_model_dir, tmp_path):
    rows = [{"problem": f"{a} + 1", "answer": "\\frac{"} for a in range(6)] + [{"problem": "1+1", "answer": "2"}]
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = recipe(tiny_model_dir, tmp_path, "--dataset_name", str(data))  # overrides recipe()'s own file
    assert proc.returncode == 2 and "Loading weights" not in proc.stderr
    assert f"{data}: 1 usable problem after skipping 6 with unparseable gold answers" in proc.stderr


def test_missing_report_to_integration_fails_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    import transformers.integrations.integration_utils as integrations

    import dler.trainer
    from dler.recipe import run

    monkeypatch.setattr(integrations, "is_tensorboard_available", lambda: False)
    monkeypatch.setattr(dler.trainer.DLERTrainer, "__init__", lambda *a, **k: pytest.fail("the model was loaded"))
    argv = recipe_args(tiny_model_dir, problems(tmp_path / "t.jsonl"), tmp_path / "out", use_cpu="true", bf16="false")
    with pytest.raises(ValueError, match=r'tensorboard: pip install "dler\[tensorboard\]"'):
        run({}, [*argv, "--report_to", "tensorboard"])


def test_help_lists_dlers_own_settings_before_trls(capsys):
    from dler.recipe import main

    with pytest.raises(SystemExit):
        main({}, ["--help-all"])  # `--help` lists dler's only (tests/test_first_hour_cli.py)
    text = capsys.readouterr().out
    listed = text[text.index("\n\n") :]  # past the usage line
    assert listed.index("dler: the recipe's data") < listed.index("\n  --truncation_length")
    assert listed.index("\n  --penalty_module") < listed.index("\noptions:") < listed.index("\n  --logging_steps")


def test_a_reward_function_that_hangs_stops_the_run_naming_it(tiny_model_dir, tmp_path):
    import time

    from helpers import addition_dataset, tiny_config

    from dler import DLERTrainer
    from dler.reward_guard import RewardTimeout

    def stuck_grader(completions, **kwargs):
        time.sleep(600)

    args = tiny_config(tmp_path, reward_timeout=1.0, dynamic_sampling=False)
    trainer = DLERTrainer(model=tiny_model_dir, reward_funcs=stuck_grader, args=args, train_dataset=addition_dataset())
    started = time.monotonic()
    with pytest.raises(RewardTimeout, match="stuck_grader"):
        trainer.train()
    assert time.monotonic() - started < 30
