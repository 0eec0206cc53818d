"""Recipes and protocols for models other than R1-Distill: Concise Reasoning's small-set RL on a non-thinking math
model, the base-model pass@k protocol, DLER with a system prompt (Nemotron) for merging. Each dry run against its
sources, and each end to end on a tiny offline model whose tokenizer has no thinking tags."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import recipe_args

from dler.recipe import load_recipe, run

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FIXTURES = Path(__file__).parent / "fixtures" / "eval"
NEW_RECIPES = ("concise_qwen_math", "dler_nemotron_8b")


@pytest.fixture(scope="module")
def plain_model_dir(tmp_path_factory):
    """A warmed-up tiny Qwen2 model whose tokenizer and corpus hold no <think> / </think>: a non-thinking model."""
    from transformers import PreTrainedTokenizerFast

    from dler.demo.tiny import CHAT_TEMPLATE, EOS, PAD, build_tiny_model, train_bpe, warm_up_eos

    corpus = [f"{a} + {b} = \\boxed{{{a + b}}}" for a in range(0, 100, 3) for b in range(0, 100, 7)]
    bpe = train_bpe(corpus, 384, [PAD, EOS, "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD)
    tokenizer.chat_template = CHAT_TEMPLATE
    assert not any("think" in token for token in tokenizer.get_vocab())
    model = warm_up_eos(build_tiny_model(tokenizer), tokenizer)
    path = tmp_path_factory.mktemp("plain") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def recipe_defaults(name):
    return load_recipe(RECIPES / f"{name}.py").DEFAULTS


def dry_run(name, capsys, *argv):
    run(recipe_defaults(name), ["--dry-run", *argv])
    return json.loads(capsys.readouterr().out)


def passk():
    return load_recipe(RECIPES / "eval_passk_base.py")


def passk_plan(capsys, *argv):
    assert passk().main(["--dry-run", *argv]) is None
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------------ sources


@pytest.mark.parametrize("name", NEW_RECIPES)
def test_every_recipe_setting_names_its_source(name):
    """Each line of DEFAULTS carries a comment (the paper, model card or released script it comes from)."""
    text = (RECIPES / f"{name}.py").read_text()
    block = next(n for n in ast.parse(text).body if isinstance(n, ast.Assign) and n.targets[0].id == "DEFAULTS")
    lines = text.splitlines()[block.lineno : block.end_lineno - 1]
    assert len(lines) == len(block.value.keys)  # one setting per line
    unsourced = [line.strip() for line in lines if "  # " not in line]
    assert not unsourced


def test_every_protocol_setting_names_its_source():
    assert all(isinstance(source, str) and len(source) > 10 for _, source in passk().PROTOCOL.values())


# ------------------------------------------------------------------------------------------------ Concise Reasoning


def test_concise_qwen_math_dry_run_follows_the_released_run(capsys):
    plan = dry_run("concise_qwen_math", capsys, "--num_processes", "2")
    script, training, batch = plan["script"], plan["training"], plan["batch"]
    assert plan["model"]["model_name_or_path"] == "Qwen/Qwen2.5-Math-7B"
    assert (script["prompt_format"], script["answer_region"], script["chat_template"]) == (
        "qwen25-math-cot",
        "whole",
        True,
    )
    assert (script["solve_rate_column"], script["max_problems"], script["preset"]) == ("solve_rate", 4, "none")
    assert (batch["samples_per_update"], batch["updates_per_generation"], batch["samples_per_generation"]) == (
        8,
        4,
        32,
    )
    assert (training["max_steps"], training["num_generations"], training["save_steps"]) == (600, 8, 16)
    assert (training["learning_rate"], training["temperature"], training["top_p"]) == (5e-7, 0.6, 1.0)
    assert (training["max_completion_length"], training["truncation_length"], training["max_prompt_length"]) == (
        3000,
        3000,
        1024,
    )
    assert (training["beta"], training["kl_estimator"], training["loss_type"], training["delta"]) == (
        0.01,
        "k3",
        "grpo",
        None,
    )
    assert (training["optimizer_recipe"], training["advantage_normalization"], training["dynamic_sampling"]) == (
        "grpo",
        "group",
        False,
    )
    assert (training["penalty"], training["truncated_reward_scale"], training["epsilon_high"]) == (
        "truncation",
        1.0,
        None,
    )
    assert training["lr_scheduler_type"] == "cosine_with_min_lr" and plan["sources"]["learning_rate"] == "recipe"


def rated_file(path, rates):
    path.write_text(
        "".join(
            json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1), "solve_rate": p}) + "\n"
            for i, p in enumerate(rates)
        )
    )
    return path


@pytest.mark.slow
def test_concise_qwen_math_trains_a_non_thinking_model_on_occasionally_solvable_problems(plain_model_dir, tmp_path):
    from dler.prompts import QWEN_MATH_COT

    data = rated_file(tmp_path / "rated.jsonl", [0.0, 0.5, 1.0, 0.25, 0.75, 0.5, 0.125])
    argv = recipe_args(plain_model_dir, data, tmp_path / "out", use_cpu="true", bf16="false", max_steps=2)
    trainer = run(recipe_defaults("concise_qwen_math"), argv)
    assert trainer.state.global_step == 2
    assert sorted(trainer.train_dataset["solve_rate"]) == [0.25, 0.5, 0.5, 0.75]  # first 4 with 0 < p < 1
    system, user = trainer.train_dataset[0]["prompt"]
    assert system == {"role": "system", "content": QWEN_MATH_COT} and user["role"] == "user"
    assert trainer.reward_funcs[0].answer_region == "whole"  # no </think> needed to score
    saved = json.loads((tmp_path / "out" / "dler_prompt.json").read_text())
    assert (saved["format"], saved["answer_region"]) == ("qwen25-math-cot", "whole")  # dler eval reads it back


# ------------------------------------------------------------------------------------------------ pass@k protocol


def test_passk_dry_run_prints_the_papers_settings_with_sources_and_loads_nothing(capsys, tmp_path):
    plan = passk_plan(capsys)
    values = {name: entry["value"] for name, entry in plan.items()}
    assert values["model"] == "Qwen/Qwen2.5-7B" and values["output_dir"] == "runs/passk/Qwen2.5-7B"
    assert (values["temperatures"], values["top_p"], values["max_tokens"], values["n"]) == ([0.6], 0.95, 16384, 256)
    assert (values["prompt_format"], values["chat_template"], values["answer_region"]) == (
        "qwen-boxed",
        False,
        "whole",
    )
    assert values["benchmarks"] == ["gsm8k", "math500", "minerva", "olympiad", "aime24", "amc23"]
    assert values["prompt"].startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    )
    assert "2504.13837" in plan["temperatures"]["source"] and "limit-of-RLVR" in plan["prompt_format"]["source"]

    missing = tmp_path / "no-such-model"  # a dry run checks the settings, never the model
    plan = passk_plan(
        capsys, "--model", str(missing), "--n", "1024", "--benchmarks", "aime24", "--output-dir", str(tmp_path / "o")
    )
    assert (plan["model"]["value"], plan["n"]["value"], plan["benchmarks"]["value"]) == (
        str(missing),
        1024,
        ["aime24"],
    )
    assert {plan[k]["source"] for k in ("model", "n", "benchmarks", "output_dir")} == {"command line"}
    assert not (tmp_path / "o").exists()


def test_passk_another_prompt_format_brings_its_own_template_and_answer_region(capsys):
    plan = passk_plan(capsys, "--prompt-format", "r1")
    assert "chat_template" not in plan and "answer_region" not in plan
    assert plan["prompt"]["value"].startswith("{problem} Let's think step by step")


def test_passk_bad_settings_are_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match="n .*must be >= 1, got 0"):
        passk().main(["--dry-run", "--n", "0"])
    with pytest.raises(ValueError, match="gsm9k"):
        passk().main(["--dry-run", "--benchmarks", "gsm9k"])
    with pytest.raises(ValueError, match="unknown --prompt-format 'qwen-boxd'; did you mean 'qwen-boxed'"):
        passk().main(["--dry-run", "--prompt-format", "qwen-boxd"])
    done = subprocess.run(
        [sys.executable, str(RECIPES / "eval_passk_base.py"), "--dry-run", "--n", "0"], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_gsm8k_gold_is_the_number_after_the_last_marker(tmp_path):
    from dler.eval.benchmarks import BENCHMARKS, load_benchmark

    answer = passk().gsm8k_answer
    assert answer("She sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert answer("1,000 + 200 = 1,200\n#### 1,200") == "1200"
    row = {"question": "Natalia sold 48 clips and half as many more. How many?", "answer": "48/2 = 24\n#### 72"}
    (tmp_path / "gsm8k.jsonl").write_text(json.dumps(row) + "\n")
    (problem,) = load_benchmark(BENCHMARKS["gsm8k"], data_dir=tmp_path, grader=None).problems
    assert (problem.problem, problem.answer) == (row["question"], "72")


@pytest.mark.slow
def test_passk_protocol_evaluates_a_non_thinking_model_end_to_end(plain_model_dir, tmp_path):
    out = tmp_path / "passk"
    argv = ["--model", plain_model_dir, "--benchmarks", "math500", "--n", "4", "--max-tokens", "8", "--limit", "2"]
    argv += ["--backend", "transformers", "--data-dir", str(FIXTURES), "--output-dir", str(out)]
    results = passk().main([*argv, "--grader-workers", "0", "--no-progress"])
    result = results[str(out)]
    math500 = result["benchmarks"]["math500"]
    assert (math500["num_problems"], math500["n"], set(math500["pass@k"])) == (2, 4, {"1", "2", "4"})
    protocol = json.loads((out / "results.json").read_text())["protocol"]
    assert protocol["sampling"]["temperature"] == 0.6 and protocol["sampling"]["top_p"] == 0.95
    assert (protocol["prompt"]["format"], protocol["prompt"]["chat_template"]) == ("qwen-boxed", False)
    assert protocol["prompt"]["answer_region"] == "whole" and protocol["prompt"]["stop"] == ["<|im_end|>"]
    first = json.loads((FIXTURES / "math500.jsonl").read_text().splitlines()[0])["problem"]
    assert protocol["prompt_example"]["text"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"{first}\nPlease reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )  # raw text: no chat template around it


# ------------------------------------------------------------------------------------------------ Nemotron + merge


def test_nemotron_dry_run_is_dler_with_the_papers_changes_and_the_thinking_system_prompt(capsys):
    from dler.prompts import resolve

    plan = dry_run("dler_nemotron_8b", capsys, "--num_processes", "64")
    script, training = plan["script"], plan["training"]
    assert plan["model"]["model_name_or_path"] == "nvidia/Llama-3.1-Nemotron-Nano-8B-v1"
    assert (training["truncation_length"], training["max_completion_length"], training["epsilon_high"]) == (
        6000,
        6000,
        0.36,
    )
    fmt = resolve(
        script["prompt_format"], system_prompt=script["system_prompt"], answer_region=script["answer_region"]
    )
    assert (fmt.system, fmt.chat_template, fmt.answer_region) == ("detailed thinking on", True, "after-think")
    shown = plan["prompt"]  # the dry run resolves the prompt as training will
    assert (shown["format"], shown["system"], shown["answer_region"]) == (fmt.name, fmt.system, fmt.answer_region)
    dler = {"learning_rate": 1e-6, "beta": 0.0005, "epsilon": 0.2, "loss_type": "dapo", "num_generations": 16}
    assert {k: training[k] for k in dler} == dler  # the rest is the DLER recipe (paper Table 4)
    assert (training["advantage_normalization"], training["dynamic_sampling"]) == ("batch", True)
    assert plan["batch"]["samples_per_update"] == 1024 and training["max_steps"] == 450 * 8


def test_nemotron_recipe_gives_the_merge_step_of_the_paper():
    doc = load_recipe(RECIPES / "dler_nemotron_8b.py").__doc__
    assert "dler merge --base nvidia/Llama-3.1-Nemotron-Nano-8B-v1 --tuned runs/dler-nemotron-8b" in doc
    assert "--top-fraction 0.25 --scale 0.7" in doc and "--prompt-format nemotron-think" in doc
    make = (RECIPES.parent / "Makefile").read_text()
    target = make[make.index("reproduce-nemotron-merge: $(STAMP)") :].split("\n\n")[0]
    assert "recipes/dler_nemotron_8b.py" in target and "--top-fraction 0.25 --scale 0.7" in target


@pytest.mark.slow
def test_nemotron_recipe_trains_with_its_system_prompt_on_a_tiny_model(plain_model_dir, tmp_path):
    data = rated_file(tmp_path / "train.jsonl", [0.5] * 8)
    argv = recipe_args(plain_model_dir, data, tmp_path / "out", use_cpu="true", bf16="false", max_steps=1)
    argv += ["--eval_dataset_name", str(data), "--dynamic_sampling", "false"]  # the tiny model never scores
    trainer = run(recipe_defaults("dler_nemotron_8b"), argv)
    assert trainer.state.global_step == 1 and trainer.args.epsilon_high == 0.36
    system, user = trainer.train_dataset[0]["prompt"]
    assert system == {"role": "system", "content": "detailed thinking on"}
    assert trainer.reward_funcs[0].answer_region == "after-think"
    assert user["content"].endswith("Let's think step by step and output the final answer within \\boxed{}.")
    saved = json.loads((tmp_path / "out" / "dler_prompt.json").read_text())
    assert (saved["format"], saved["system"], saved["answer_region"]) == (
        "nemotron-think",
        "detailed thinking on",
        "after-think",
    )
