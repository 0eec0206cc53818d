"""Recipes: each dry run against the paper's settings, presets, batch arithmetic, and a real tiny run."""

import json
import os
from pathlib import Path

import pytest
from helpers import recipe_args

from dler.recipe import batch_layout, load_recipe, run

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
PAPER = {  # paper Table 4 and the released script (docs/fidelity.md)
    "learning_rate": 1e-6,
    "lr_scheduler_type": "constant",
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "beta": 0.0005,
    "epsilon": 0.2,
    "epsilon_high": 0.28,
    "loss_type": "dapo",
    "num_generations": 16,
    "temperature": 1.0,
    "top_p": 1.0,
    "max_completion_length": 4000,
    "truncation_length": 4000,
    "advantage_normalization": "batch",
    "dynamic_sampling": True,
}


def recipe_defaults(name):
    return load_recipe(RECIPES / f"{name}.py").DEFAULTS


def dry_run(name, capsys, *argv):
    run(recipe_defaults(name), ["--dry-run", "--num_processes", "64", *argv])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", ["dler_r1_1p5b", "dler_r1_7b", "da_dler_r1_1p5b", "da_dler_r1_7b"])
def test_dry_run_matches_the_paper(name, capsys):
    plan = dry_run(name, capsys)
    training = plan["training"]
    assert {k: training[k] for k in PAPER} == PAPER
    assert plan["batch"]["samples_per_update"] == 64 * 16 and plan["batch"]["samples_per_generation"] == 512 * 16
    assert plan["batch"]["updates_per_generation"] == 8
    per_update = training["per_device_train_batch_size"] * 64 * training["gradient_accumulation_steps"]
    assert per_update == 1024 and training["steps_per_generation"] == 8 * training["gradient_accumulation_steps"]
    assert (training["truncated_reward_scale"], training["advantage_weighting"]) == (0.0, "sequence")  # paper preset
    if name.startswith("da_"):
        assert training["length_budgets"] == ["0.5:2000"] and training["max_steps"] == 150 * 8
        assert plan["model"]["model_name_or_path"].startswith("runs/dler-r1-")
    else:
        assert training["length_budgets"] is None and training["max_steps"] == 450 * 8


def test_released_preset_and_command_line_precedence(capsys):
    released = dry_run("dler_r1_1p5b", capsys, "--preset", "released")["training"]
    assert (
        released["truncated_reward_scale"],
        released["advantage_weighting"],
        released["dynamic_sampling_metric"],
    ) == (0.1, "token", "correctness")
    override = dry_run("dler_r1_1p5b", capsys, "--preset", "released", "--truncated_reward_scale", "0.0")["training"]
    assert override["truncated_reward_scale"] == 0.0  # the command line beats the preset


def test_yaml_config_sits_between_preset_and_command_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("truncation_length: 3000\nlearning_rate: 2.0e-6\n")
    training = dry_run("dler_r1_1p5b", capsys, "--config", str(config), "--learning_rate", "3e-6")["training"]
    assert (training["truncation_length"], training["learning_rate"]) == (3000, 3e-6)


def test_batch_arithmetic_and_its_errors(capsys):
    layout = batch_layout(512, 64, 16, num_processes=8, per_device=16)
    assert (layout["gradient_accumulation_steps"], layout["updates_per_generation"]) == (8, 8)
    plan = dry_run("dler_r1_1p5b", capsys, "--num_processes", "8")  # DLERConfig multiplies the two into the config
    assert plan["training"]["steps_per_generation"] == plan["batch"]["steps_per_generation"] == 64
    assert plan["training"]["gradient_accumulation_steps"] == plan["batch"]["gradient_accumulation_steps"] == 8
    with pytest.raises(ValueError, match=r"over 6 processes x per_device_train_batch_size 5. With 6 .* in \[1, 2, 4,"):
        batch_layout(480, 48, 16, num_processes=6, per_device=5)  # 768 samples per update: 128 per process
    with pytest.raises(ValueError, match=r"over 3 processes .* use a process count that divides 1024 \(1, 2, 4,"):
        batch_layout(512, 64, 16, num_processes=3, per_device=16)
    with pytest.raises(ValueError, match="multiple of prompts_per_update"):
        batch_layout(500, 64, 16, num_processes=8, per_device=16)


@pytest.mark.parametrize(
    "argv", [["--updates_per_generation", "4"], ["--gradient_accumulation_steps=2"], ["--generation_batch_size", "64"]]
)
def test_the_derived_layout_cannot_be_set_beside_the_global_batch(argv, tmp_path, capsys):
    from dler.recipe import UsageError

    name = argv[0].lstrip("-").split("=")[0]
    with pytest.raises(UsageError, match=f"^{name}: a recipe derives the batch layout .* set those instead"):
        dry_run("dler_r1_1p5b", capsys, *argv)
    config = tmp_path / "run.yaml"
    config.write_text(f"{name}: 4\n")
    with pytest.raises(UsageError, match=f"^{name}: a recipe derives"):
        dry_run("dler_r1_1p5b", capsys, "--config", str(config))


@pytest.mark.slow
def test_tiny_training_through_the_recipe_with_lora_and_auto_resume(tiny_model_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(json.dumps({"problem": f"What is {a} + {a}?", "answer": str(2 * a)}) + "\n" for a in range(12))
        + json.dumps({"problem": "broken", "answer": "\\frac{"})
        + "\n"
    )
    argv = recipe_args(
        tiny_model_dir,
        data,
        tmp_path / "out",
        use_cpu="true",
        bf16="false",
        dynamic_sampling="false",
        max_steps=2,
        save_steps=2,
        save_strategy="steps",
        use_peft="true",
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj"],
    )
    trainer = run({}, argv)
    assert trainer.state.global_step == 2 and len(trainer.train_dataset) == 12  # the unparseable gold was skipped
    assert type(trainer.model).__name__.startswith("Peft")
    checkpoint = tmp_path / "out" / "checkpoint-2"
    stamp = os.path.getmtime(checkpoint / "trainer_state.json")
    again = run({}, argv)  # the same command once the run has finished: nothing to train, nothing rewritten
    assert again is None and os.path.getmtime(checkpoint / "trainer_state.json") == stamp


def test_training_prompt_is_the_evaluation_prompt():
    from dler.data import r1_prompt
    from dler.eval.benchmarks import R1_PROMPT_TEMPLATE

    (message,) = r1_prompt("What is $\\{1, 2\\}$?")
    assert (
        message["content"]
        == "What is $\\{1, 2\\}$? Let's think step by step and output the final answer within \\boxed{}."
    )
    assert message["content"] == R1_PROMPT_TEMPLATE.replace("{problem}", "What is $\\{1, 2\\}$?")


def test_concise_stage_two_dry_run(capsys):
    plan = dry_run("concise_two_stage", capsys, "--num_processes", "8")
    training, script = plan["training"], plan["script"]
    assert (training["optimizer_recipe"], training["advantage_normalization"], training["dynamic_sampling"]) == (
        "grpo",
        "group",
        False,
    )
    assert training["truncated_reward_scale"] == 1.0 and script["solve_rate_column"] == "solve_rate"
    assert plan["batch"]["samples_per_update"] == 4 * 16


@pytest.mark.slow
def test_concise_stage_two_keeps_occasionally_solvable_problems(tiny_model_dir, tmp_path):
    rates = [0.0, 1.0, 0.5, 0.25, 0.75, 0.5]
    data = tmp_path / "rated.jsonl"
    data.write_text(
        "".join(
            json.dumps({"problem": f"{i} + 1", "answer": str(i + 1), "solve_rate": p}) + "\n"
            for i, p in enumerate(rates)
        )
    )
    argv = recipe_args(
        tiny_model_dir, data, tmp_path / "o", use_cpu="true", bf16="false", per_device_train_batch_size=8
    )
    trainer = run(recipe_defaults("concise_two_stage"), argv)
    assert sorted(trainer.train_dataset["solve_rate"]) == [0.25, 0.5, 0.5, 0.75]
    with pytest.raises(ValueError, match="3 usable problems, fewer than one generation batch"):
        run(recipe_defaults("concise_two_stage"), [*argv, "--max_problems", "3", "--output_dir", str(tmp_path / "3")])


def test_dler_tiny_dry_run_is_a_cpu_run_of_the_same_entry_point(capsys):
    plan = dry_run("dler_tiny", capsys, "--num_processes", "2")
    assert plan["batch"]["samples_per_update"] == 2 * 4 and plan["batch"]["updates_per_generation"] == 2
    assert plan["training"]["use_vllm"] is False and plan["model"]["model_name_or_path"] == "runs/tiny/model"
