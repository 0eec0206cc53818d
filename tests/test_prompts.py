"""dler.prompts: the named formats render as their sources write them, overrides and bad input, the records, and
the one definition reaching TRL (raw text, or the chat template with a system prompt and chat_template_kwargs)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
from eval_fakes import CharTokenizer  # noqa: E402

from dler.prompts import (  # noqa: E402
    FORMATS,
    PROMPT_FILE,
    PromptError,
    cut_at_stop,
    from_settings,
    get_format,
    messages,
    parse_chat_template_kwargs,
    prompt_of,
    prompt_settings,
    raw_text,
    read_prompt_file,
    render,
    resolve,
    write_prompt_file,
)

COT = "Please reason step by step, and put your final answer within \\boxed{}."
R1 = "Let's think step by step and output the final answer within \\boxed{}."
# a chat template that reads Qwen3's switch: with enable_thinking false the generation prompt closes the thinking
KW_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def test_named_formats_render_as_their_sources_write_them():
    tok = CharTokenizer()
    assert render(get_format("r1"), "What is 1+1?", tok) == f"<user>What is 1+1? {R1}<assistant>"
    assert render(get_format("boxed"), "What is 1+1?") == f"What is 1+1?\n{COT}"
    assert render(get_format("qwen-boxed"), "What is 1+1?") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 1+1?\n"
        f"{COT}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert messages(get_format("qwen25-math-cot"), "What is 1+1?") == [
        {"role": "system", "content": COT},
        {"role": "user", "content": "What is 1+1?"},
    ]
    assert render(get_format("qwen25-math-cot"), "x", tok) == f"<system>{COT}<user>x<assistant>"
    assert render(get_format("nemotron-think"), "x", tok) == f"<system>detailed thinking on<user>x {R1}<assistant>"
    regions = {name: fmt.answer_region for name, fmt in FORMATS.items()}
    assert regions == {"r1": "after-think", "boxed": "whole", "qwen-boxed": "whole", "fewshot-cot": "whole",
                       "qwen25-math-cot": "whole", "nemotron-think": "after-think"}  # fmt: skip
    assert all(fmt.source for fmt in FORMATS.values())


def test_fewshot_format_is_the_harness_layout():
    fmt = get_format("fewshot-cot")
    text = render(fmt, "What is 1+1?")
    shots = text.split("\n\n\n")
    assert len(shots) == 5 and shots[-1] == "Question: What is 1+1?\nAnswer:"
    assert (
        shots[0].startswith("Question: Kevin Kangaroo begins hopping")
        and "\nAnswer: Let's think step by step\n" in shots[0]
    )
    assert shots[1].endswith("\\boxed{63\\pi}$.\nThe answer is 63\\pi")
    assert all("\\boxed{" in s for s in shots[:4]) and fmt.stop == ("\n\nQuestion:",)
    chat = resolve("fewshot-cot", chat_template=True)  # with the chat template the examples become turns
    roles = [m["role"] for m in messages(chat, "q")]
    assert roles == ["user", "assistant"] * 4 + ["user"]


def test_overrides_and_prompt_values_for_trl():
    fmt = resolve("r1", system_prompt="Be brief.", chat_template_kwargs='{"enable_thinking": false}')
    assert fmt.system == "Be brief." and fmt.chat_template_kwargs == {"enable_thinking": False}
    assert resolve("qwen25-math-cot", system_prompt="").system is None  # "" removes the format's
    assert prompt_of(fmt, "x") == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"x {R1}"}]
    raw = resolve("r1", chat_template=False, user="Q: {problem}\nA:", answer_region="whole")
    assert prompt_of(raw, "1+1") == raw_text(raw, "1+1") == "Q: 1+1\nA:" and raw.answer_region == "whole"
    assert cut_at_stop("a\n\nQuestion: b\n\nQuestion: c", ("\n\nQuestion:",)) == "a"
    assert cut_at_stop("abc", ("x", "")) is None


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: get_format("r2"), "unknown prompt format 'r2'; did you mean 'r1'?"),
        (lambda: resolve("r1", user="no placeholder"), "must contain {problem}"),
        (lambda: resolve("r1", chat_template_kwargs="{enable_thinking: false}"), "is not valid JSON"),
        (lambda: resolve("r1", chat_template_kwargs="[1]"), "must be a JSON object"),
        (lambda: resolve("r1", answer_region="end"), "--answer-region must be one of 'after-think', 'whole'"),
        (lambda: resolve("qwen25-math-cot", chat_template=False), "a system prompt needs the chat template"),
        (lambda: resolve("boxed", chat_template_kwargs={"enable_thinking": False}), "would be ignored"),
    ],
)
def test_bad_prompt_settings_name_the_setting(build, message):
    with pytest.raises(PromptError) as e:
        build()
    assert message in str(e.value)


def test_a_chat_format_needs_a_tokenizer_with_a_chat_template():
    class NoTemplate(CharTokenizer):
        chat_template = None

    with pytest.raises(PromptError, match="has no chat template, but prompt format 'r1' applies one.*--no-chat-templ"):
        render(get_format("r1"), "x", NoTemplate(), "base-model")
    assert render(resolve("r1", chat_template=False), "x", NoTemplate()) == f"x {R1}"
    assert parse_chat_template_kwargs(None) == {} and parse_chat_template_kwargs("") == {}


def test_settings_round_trip_through_the_model_folder(tmp_path):
    fmt = resolve("qwen25-math-cot", chat_template_kwargs={"enable_thinking": False}, answer_region="after-think")
    settings = prompt_settings(fmt)
    assert settings["format"] == "qwen25-math-cot" and settings["system"] == COT and settings["shots"] == 0
    assert prompt_settings(get_format("fewshot-cot"))["shots"] == 4
    assert from_settings(json.loads(json.dumps(settings))) == fmt
    assert read_prompt_file(tmp_path) is None
    write_prompt_file(tmp_path, fmt)
    assert read_prompt_file(tmp_path) == settings and (tmp_path / PROMPT_FILE).is_file()
    (tmp_path / PROMPT_FILE).write_text("[]")
    with pytest.raises(PromptError, match="not a JSON object of prompt settings"):
        read_prompt_file(tmp_path)


# ------------------------------------------------------------------------------------------------ into TRL


@pytest.fixture(scope="module")
def kwargs_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a chat template that reads `enable_thinking`."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("kw") / "model"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = KW_TEMPLATE
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_raw_and_chat_prompts_reach_trl_as_the_definition_renders_them(tmp_path, kwargs_model_dir):
    from datasets import Dataset
    from helpers import always_correct, tiny_config
    from transformers import AutoTokenizer

    from dler import DLERTrainer
    from dler.data import math_prompts, prompt_token_counts

    tokenizer = AutoTokenizer.from_pretrained(kwargs_model_dir)
    rows = Dataset.from_list([{"problem": "1+1", "answer": "2"}, {"problem": "2+3", "answer": "5"}] * 4)
    chat = resolve("r1", system_prompt="Be brief.", chat_template_kwargs={"enable_thinking": False})
    raw = get_format("boxed")
    for fmt in (raw, chat):
        data, _ = math_prompts(rows.select(range(2)), prompt_format=fmt, on_duplicate="skip")
        trainer = DLERTrainer(
            model=kwargs_model_dir,
            reward_funcs=always_correct,
            args=tiny_config(tmp_path, chat_template_kwargs=fmt.chat_template_kwargs or None),
            train_dataset=data,
        )
        ids, _, _ = trainer._tokenize_prompts([row["prompt"] for row in data])
        texts = [render(fmt, p, tokenizer) for p in ("1+1", "2+3")]
        assert [tokenizer.decode(i) for i in ids] == texts
        assert prompt_token_counts(data, tokenizer, chat_template_kwargs=fmt.chat_template_kwargs) == list(
            map(len, ids)
        )
    assert isinstance(data["prompt"][0], list)  # the chat format: a conversation
    assert texts[0] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+1 " + R1 + "<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    raw_data, _ = math_prompts(rows.select(range(2)), prompt_format=raw)
    assert list(raw_data["prompt"]) == [f"1+1\n{COT}", f"2+3\n{COT}"]  # a plain string: TRL takes it as raw text


def test_training_prompt_settings(tmp_path):
    from types import SimpleNamespace

    from dler.runs import settings_differences
    from dler.training import run_settings, training_prompt

    def args(**kw):
        script = dict(prompt_format="r1", system_prompt=None, chat_template=True, answer_region=None)
        script.update(kw)
        return SimpleNamespace(**script)

    training = SimpleNamespace(chat_template_kwargs=None)
    assert training_prompt(args(), training) == get_format("r1")
    assert training_prompt(args(prompt_format="boxed"), training).chat_template is False  # True keeps the format's
    assert training_prompt(args(chat_template=False), training).chat_template is False
    kw = training_prompt(args(), SimpleNamespace(chat_template_kwargs={"enable_thinking": False}))
    assert kw.chat_template_kwargs == {"enable_thinking": False}
    assert training_prompt(args(answer_region="whole"), training).answer_region == "whole"
    with pytest.raises(ValueError, match="its responses end at .*TRL's generation does not apply"):
        training_prompt(args(prompt_format="qwen-boxed"), training)

    # the prompt is part of what a resume must keep
    from dler.config import DLERConfig

    config = DLERConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[])
    model = SimpleNamespace(model_name_or_path="m")
    base = dict(dataset_name="d", dataset_split="train", prompts_per_generation=4, prompts_per_update=2,
                max_problems=None, solve_rate_column=None, grader="dler")  # fmt: skip
    first = run_settings(args(**base), config, model)
    changed = run_settings(args(**base, answer_region="whole"), config, model)
    assert first["prompt"] == json.loads(json.dumps(prompt_settings(get_format("r1"))))
    assert [d.split(":")[0] for d in settings_differences(first, changed)] == ["prompt"]


def test_recipe_arguments_refuse_bad_prompt_settings_before_loading():
    from dler.recipe import ScriptArguments

    with pytest.raises(PromptError, match="did you mean 'boxed'"):
        ScriptArguments(prompt_format="boxd")
    with pytest.raises(PromptError, match="a system prompt needs the chat template"):
        ScriptArguments(system_prompt="Be brief.", chat_template=False)
    with pytest.raises(PromptError, match="must be one of"):
        ScriptArguments(answer_region="last")
    with pytest.raises(PromptError, match="it is an evaluation format"):
        ScriptArguments(prompt_format="fewshot-cot")
    assert ScriptArguments(prompt_format="boxed", answer_region="after-think").prompt_format == "boxed"


# ------------------------------------------------------------------------------------------------ graders


def test_answer_regions_grade_hand_examples():
    from dler.rewards import MathReward

    texts = [
        "<think>2+2 is \\boxed{5}? no</think> so \\boxed{4}",  # thinking closed: the box after it
        "It is \\boxed{5}, no: \\boxed{4}",  # no thinking tags: the last box of the whole response
        "\\boxed{4}</think>",  # a box only before </think>
        "<think>\\boxed{4} and still thinking",  # never closed
    ]
    golds = ["4"] * 4
    after = MathReward(num_workers=0, answer_region="after-think")
    whole = MathReward(num_workers=0, answer_region="whole")
    assert after.score(texts, golds) == [1.0, 0.0, 0.0, 0.0]
    assert whole.score(texts, golds) == [1.0, 1.0, 1.0, 1.0]
    assert [g.status for g in after.grade(texts, golds)] == ["correct", "no_think_end", "no_box", "no_think_end"]
    assert (after.answer_region, whole.answer_region) == ("after-think", "whole")
    assert MathReward(num_workers=0).answer_region == "after-think"  # the R1 grader by default
    assert MathReward(num_workers=0, think_end=None).answer_region == "whole"
    assert whole.describe()["answer_region"] == "whole" and whole.think_end is None
    released = MathReward(num_workers=0, grader="released", answer_region="whole")
    assert released.score(texts[1:2], ["4"]) == [1.0]
    with pytest.raises(PromptError, match="must be one of"):
        MathReward(num_workers=0, answer_region="end")


def test_unclosed_thinking_is_logged_and_warned_about(caplog):
    import logging

    from dler.rewards import MathReward

    caplog.set_level(logging.WARNING, logger="dler.rewards.reward")
    completions = ["\\boxed{4}", "\\boxed{4}", "\\boxed{3}", "<think>x</think>\\boxed{4}"]
    metrics = {}
    reward = MathReward(num_workers=0)
    assert reward(completions=completions, answer=["4"] * 4, log_metric=metrics.__setitem__) == [0, 0, 0, 1.0]
    assert metrics["math/think_unclosed"] == 0.75
    (warning,) = [r.getMessage() for r in caplog.records if "never close their thinking" in r.getMessage()]
    assert "75% of this call's responses" in warning and "--answer_region whole" in warning
    assert "--prompt_format" in warning
    caplog.clear()
    metrics.clear()
    whole = MathReward(num_workers=0, answer_region="whole")  # the switch: graded, no metric, no warning
    assert whole(completions=completions, answer=["4"] * 4, log_metric=metrics.__setitem__) == [1.0, 1.0, 0, 1.0]
    assert "math/think_unclosed" not in metrics and "never close" not in caplog.text
    reward(completions=completions[3:], answer=["4"], log_metric=metrics.__setitem__)  # half or fewer: no warning
    assert metrics["math/think_unclosed"] == 0.0 and "never close" not in caplog.text


def test_a_prompt_file_naming_an_unknown_format_says_where_it_comes_from(tmp_path):
    settings = prompt_settings(get_format("r1"))
    with pytest.raises(PromptError, match=r"x.json: unknown prompt format 'mine'.*--prompt-format"):
        from_settings({**settings, "format": "mine"}, "x.json")
    with pytest.raises(PromptError, match="no 'user'"):
        from_settings({"format": "r1"}, "x.json")


def test_every_checkpoint_gets_the_prompt_settings(tmp_path):
    from types import SimpleNamespace

    from dler.training import PromptIntoCheckpoints

    fmt = resolve("r1", answer_region="whole")
    callback = PromptIntoCheckpoints(fmt)
    args = SimpleNamespace(output_dir=str(tmp_path))
    callback.on_save(args, SimpleNamespace(is_world_process_zero=True, global_step=4), None)
    callback.on_save(args, SimpleNamespace(is_world_process_zero=False, global_step=6), None)  # other ranks: nothing
    assert read_prompt_file(tmp_path / "checkpoint-4") == prompt_settings(fmt)
    assert not (tmp_path / "checkpoint-6").exists()
