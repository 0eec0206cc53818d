"""`--preset paper|released`: every value each preset sets, with its source, and the checks made before a model loads."""

import json

import pytest
from test_recipes import dry_run

from dler.data import check_prompt_lengths, model_context_length
from dler.presets import PRESETS

SHARED = {  # both presets: what TRL 1.16 would otherwise change about the objective, and the released validation
    "vllm_importance_sampling_correction": False,
    "delta": 10.0,
    "use_bias_correction_kl": False,
    "max_prompt_length": 1024,
    "eval_temperature": 0.6,
    "num_generations_eval": 4,
}
PAPER = {
    "truncated_reward_scale": 0.0,
    "advantage_weighting": "sequence",
    "dynamic_sampling_metric": "reward",
    "kl_estimator": "k2",
    "prompts_per_round": 512,
    "grader": "dler",
}
RELEASED = {
    "truncated_reward_scale": 0.1,
    "advantage_weighting": "token",
    "dynamic_sampling_metric": "correctness",
    "kl_estimator": "low_var_kl",
    "prompts_per_round": 384,
    "grader": "released",
}


@pytest.mark.parametrize("preset, expected", [("paper", {**SHARED, **PAPER}), ("released", {**SHARED, **RELEASED})])
def test_each_preset_sets_each_value_and_names_its_source(preset, expected, capsys):
    plan = dry_run("dler_r1_1p5b", capsys, "--preset", preset)
    training, sources = plan["training"], plan["sources"]
    for name, value in expected.items():
        assert training[name] == value, name
        assert sources[name].startswith(f"preset {preset}: "), (name, sources[name])  # not a default that agrees
        assert "Table 4" in sources[name] or "released" in sources[name] or "paper" in sources[name]
    # validation as the released run: AIME-24 every 5 generation steps (= 40 optimizer steps), one group per rank
    assert plan["script"]["eval_dataset_name"] == "HuggingFaceH4/aime_2024"
    assert (training["eval_strategy"], training["eval_steps"], training["per_device_eval_batch_size"]) == (
        "steps",
        40,
        4,
    )
    assert sources["max_steps"].startswith("recipe (450 generation steps x 8 updates")
    assert plan["batch"]["generation_steps"] == 450


def test_presets_cover_the_same_fields_and_every_value_has_a_source():
    assert set(PRESETS["paper"]) == set(PRESETS["released"])
    for preset in ("paper", "released"):
        for name, (_, source) in PRESETS[preset].items():
            assert source and ("Table 4" in source or "released" in source or "paper" in source), name


def test_sources_follow_precedence(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("delta: 5.0\n")
    plan = dry_run("dler_r1_1p5b", capsys, "--preset", "released", "--config", str(config), "--kl_estimator", "k3")
    training, sources = plan["training"], plan["sources"]
    assert (training["delta"], sources["delta"]) == (5.0, "YAML config")
    assert (training["kl_estimator"], sources["kl_estimator"]) == ("k3", "command line")
    assert sources["gradient_accumulation_steps"].startswith("derived: 64 prompts per update on 64 processes")
    assert sources["steps_per_generation"] == (
        "derived by DLERConfig: gradient_accumulation_steps x updates_per_generation"
    )
    assert sources["epsilon_high"] == "optimizer_recipe dler: fills it when unset"
    assert sources["truncation_length"] == "recipe" and sources["top_p"].startswith("default")
    assert sources["beta"].startswith("DLERConfig default")


def test_prompts_per_round_is_left_unset_without_dynamic_sampling(capsys):
    plan = dry_run("dler_r1_1p5b", capsys, "--preset", "paper", "--dynamic_sampling", "false")
    assert plan["training"]["prompts_per_round"] is None


def test_prompt_length_check_counts_cuts_and_names_rows_that_cannot_fit(caplog):
    assert check_prompt_lengths([10, 2000, 30], 1024, 4000, 8192, "training set") == 1
    assert "1 of 3 prompts are longer than max_prompt_length=1024" in caplog.text and "row 1 (2000" in caplog.text
    with pytest.raises(ValueError, match=r"training set: 1 prompts .* context of 4096 tokens \(row 1 \(2000 tokens"):
        check_prompt_lengths([10, 2000, 30], None, 4000, 4096, "training set")
    assert check_prompt_lengths([10, 2000], None, 4000, None, "x") == 0  # a model that states no context

    class Config:
        max_position_embeddings = 131072

    assert model_context_length(Config()) == 131072 and model_context_length(object()) is None


@pytest.mark.slow
def test_a_prompt_too_long_for_the_model_fails_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    from helpers import recipe_args

    import dler.trainer
    from dler.recipe import run

    rows = [{"problem": f"{i} + 1 = ?", "answer": str(i + 1)} for i in range(4)]
    rows.append({"problem": "1 + 1 " * 5000, "answer": "2"})  # ~25k characters: past the tiny model's 2048 tokens
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(dler.trainer.DLERTrainer, "__init__", no_model)
    cpu = {"use_cpu": "true", "bf16": "false"}
    argv = recipe_args(tiny_model_dir, str(data), str(tmp_path / "out"), max_prompt_length="None", **cpu)
    with pytest.raises(ValueError, match=r"training set: 1 prompts plus max_completion_length=16 .*row 4"):
        run({}, argv)
    argv = recipe_args(tiny_model_dir, str(data), str(tmp_path / "out"), **cpu)
    with pytest.raises(AssertionError, match="the model was loaded"):  # the paper's 1024-token cap makes it fit
        run({}, argv)


@pytest.mark.slow
def test_released_preset_trains_the_tiny_model_with_its_grader_and_validation(tiny_model_dir, tmp_path):
    from helpers import recipe_args

    from dler.recipe import run

    data, held_out = tmp_path / "train.jsonl", tmp_path / "aime.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{a} + {a}?", "answer": str(2 * a)}) + "\n" for a in range(8)))
    held_out.write_text("".join(json.dumps({"question": f"{a} + 1?", "final": str(a + 1)}) + "\n" for a in range(3)))
    argv = recipe_args(
        tiny_model_dir,
        data,
        tmp_path / "out",
        use_cpu="true",
        bf16="false",
        dynamic_sampling="false",
        max_steps=2,
        preset="released",
        eval_dataset_name=held_out,
        eval_problem_column="question",
        eval_answer_column="final",
        eval_every_generations=1,
    )
    trainer = run({}, argv)
    args = trainer.args
    assert (args.eval_strategy, args.eval_steps, args.eval_temperature, args.num_generations_eval) == (
        "steps",
        2,
        0.6,
        4,
    )
    assert (args.kl_estimator, args.max_prompt_length, args.truncated_reward_scale) == ("low_var_kl", 1024, 0.1)
    assert trainer.reward_funcs[0].grader == "released"
    evals = [log for log in trainer.state.log_history if "eval_dler/accuracy" in log]
    assert len(evals) == 1 and evals[0]["step"] == 2  # every generation step = 2 optimizer updates here
    assert {"eval_dler/mean_length", "eval_dler/truncated_frac"} <= set(evals[0])
