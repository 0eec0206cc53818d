"""dler eval / solve-rate with prompt formats and answer regions: what the backend is given, how responses without
thinking tags are graded (and the warning when the region does not fit them), the protocol's prompt record, the
resume key, the model folder's trained settings, stop strings, and `dler report`'s prompt warnings."""

import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
from eval_fakes import CharTokenizer, ScriptedBackend  # noqa: E402

from dler.eval.errors import ResumeError  # noqa: E402
from dler.eval.run import evaluate  # noqa: E402
from dler.eval.settings import EvalConfig  # noqa: E402
from dler.prompts import PROMPT_FILE, get_format, prompt_settings, resolve, write_prompt_file  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
GOLDS = {"7}{13}": "\\frac{7}{13}", "sqrt{12}": "2\\sqrt{3}", "(0,3)": "(3, \\frac{\\pi}{2})"}
R1 = "Let's think step by step and output the final answer within \\boxed{}."


def no_think(text, seed, j):
    """A model that never thinks in tags: right on even samples, the answer boxed at the end."""
    gold = next((g for key, g in GOLDS.items() if key in text), "0")
    return f"So the answer is \\boxed{{{gold if j % 2 == 0 else 42}}}", 8, False


def config(tmp_path, name="run", **kw):
    settings = dict(model="fake-model", output_dir=str(tmp_path / name), benchmarks=["math500"], n=2,
                    temperatures=[0.6], max_tokens=40, data_dir=str(FIXTURES), grader_workers=0, progress=False,
                    backend="transformers")  # fmt: skip
    settings.update(kw)
    return EvalConfig(**settings)


def run(cfg, respond=no_think):
    backend = ScriptedBackend(respond)
    ((_, results),) = evaluate(cfg, backend=backend, tokenizer=CharTokenizer()).items()
    return results, backend


def test_a_model_without_thinking_tags_scores_with_the_whole_region_and_warns_without_it(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="dler.eval.run")
    results, _ = run(config(tmp_path))  # r1: the answer after </think>
    m = results["benchmarks"]["math500"]
    assert m["pass@1"] == 0.0 and m["think_unclosed"] == 1.0 and m["grading"] == {"no_think_end": 6}
    (warning,) = [r.getMessage() for r in caplog.records if "never close their thinking" in r.getMessage()]
    assert "100% of the responses" in warning and "--answer-region whole" in warning
    caplog.clear()
    results, _ = run(config(tmp_path, "whole", answer_region="whole"))
    m = results["benchmarks"]["math500"]
    assert m["pass@1"] == 0.5 and m["think_unclosed"] == 1.0  # recorded, and no longer a problem
    assert "never close their thinking" not in caplog.text
    assert results["protocol"]["grader"]["answer_region"] == "whole"
    assert results["protocol"]["prompt"]["answer_region"] == "whole"


def test_protocol_records_the_prompt_settings_and_the_rendered_text(tmp_path):
    results, backend = run(config(tmp_path, system_prompt="Be brief."))
    protocol = results["protocol"]
    first = "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates."
    text = f"<system>Be brief.<user>{first} {R1}<assistant>"
    assert protocol["prompt_example"] == {"benchmark": "math500", "index": 0, "text": text}
    assert backend.prompts[0] == text  # what the model was given
    assert protocol["prompt"] == prompt_settings(resolve("r1", system_prompt="Be brief."))
    assert protocol["resume_key"]["prompt"]["system"] == "Be brief." and protocol["chat_template"] is True
    assert protocol["config"]["prompt_origin"] == "the default format, with --system-prompt"


def test_a_raw_format_gives_the_backend_raw_text(tmp_path):
    results, backend = run(config(tmp_path, prompt_format="boxed"))
    assert backend.prompts[1] == (
        "What is $\\frac{7}{13}$ written as a fraction in lowest terms?\nPlease reason step by step, and put your "
        "final answer within \\boxed{}."
    )
    assert results["protocol"]["chat_template"] is False and results["benchmarks"]["math500"]["pass@1"] == 0.5


def test_resume_refuses_a_changed_prompt_and_accepts_runs_recorded_before_prompts(tmp_path):
    cfg = config(tmp_path)
    run(cfg)
    for changed in (dict(system_prompt="x"), dict(answer_region="whole"), dict(prompt_format="nemotron-think"),
                    dict(chat_template_kwargs='{"enable_thinking": false}')):  # fmt: skip
        with pytest.raises(ResumeError, match=r"prompt: .*--prompt-format"):
            run(config(tmp_path, **changed))
    path = tmp_path / "run" / "protocol.json"
    old = json.loads(path.read_text())
    del old["resume_key"]["prompt"], old["prompt"], old["prompt_example"]  # as written before prompts were settings
    path.write_text(json.dumps(old))
    results, backend = run(cfg)
    assert backend.prompts == [] and results["protocol"]["prompt"]["format"] == "r1"  # resumed: nothing to redo
    with pytest.raises(ResumeError, match="prompt"):
        run(config(tmp_path, prompt_format="boxed"))


def test_a_trained_model_folder_is_evaluated_with_its_prompt_unless_a_flag_says_otherwise(tmp_path, caplog):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    write_prompt_file(model, resolve("r1", chat_template=False, answer_region="whole"))
    caplog.set_level(logging.INFO, logger="dler.eval.settings")
    resolved = config(tmp_path, model=str(model)).validate()
    assert (resolved.prompt_format, resolved.chat_template, resolved.answer_region) == ("r1", False, "whole")
    assert f"as the model was trained ({model / PROMPT_FILE})" in caplog.text
    assert resolved.validate() == resolved  # resolving again changes nothing
    flagged = config(tmp_path, model=str(model), answer_region="after-think").validate()
    assert (flagged.chat_template, flagged.answer_region) == (False, "after-think")
    assert flagged.prompt_origin.endswith("with --answer-region")
    other = config(tmp_path, model=str(model), prompt_format="qwen25-math-cot").validate()
    assert (
        other.chat_template is True and other.answer_region == "whole"
    )  # a named format: the trained file is not read


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(prompt_format="r2"), "did you mean 'r1'"),
        (dict(chat_template_kwargs="{bad"), "is not valid JSON"),
        (dict(chat_template=False, chat_template_kwargs='{"a": 1}'), "would be ignored"),
        (dict(prompt_template="no placeholder"), "must contain {problem}"),
    ],
)
def test_bad_prompt_settings_fail_before_anything_is_written(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        run(config(tmp_path, **kw))
    assert not (tmp_path / "run").exists()


def test_a_chat_format_with_a_tokenizer_without_template_fails_before_anything_is_written(tmp_path):
    from dler.eval.errors import EvalSettingsError

    class NoTemplate(CharTokenizer):
        chat_template = None

    with pytest.raises(EvalSettingsError, match="has no chat template.*--no-chat-template"):
        evaluate(config(tmp_path), backend=ScriptedBackend(no_think), tokenizer=NoTemplate())
    assert not (tmp_path / "run").exists()


def test_stop_strings_end_responses(tmp_path):
    from dler.eval.generate import SamplingSettings, TransformersBackend, _tokens_until_stop
    from dler.eval.vllm_backend import VLLMBackend

    tok = CharTokenizer()
    backend = TransformersBackend.__new__(TransformersBackend)  # the response logic, without a model
    backend.tokenizer, backend.eos_ids, backend.pad_id = tok, [0], 0
    ids = [ord(c) for c in "x=\\boxed{2}\n\nQuestion: next \\boxed{9}"]
    sample = backend._sample(ids, ("\n\nQuestion:",))
    assert sample.text == "x=\\boxed{2}" and sample.tokens == len("x=\\boxed{2}\n\nQuestion:") and not sample.truncated
    assert backend._sample(ids, ()).truncated  # no stop string: cut by the cap
    assert _tokens_until_stop(tok, [ord(c) for c in "abSTOPcd"], ("STOP",)) == 6
    settings = SamplingSettings(2, 0.6, 0.95, 40, stop=get_format("fewshot-cot").stop)
    assert VLLMBackend.sampling_kwargs(settings)["stop"] == ["\n\nQuestion:"]
    assert "stop" not in VLLMBackend.sampling_kwargs(SamplingSettings(2, 0.6, 0.95, 40))
    assert backend.generation_config(settings).stop_strings == ["\n\nQuestion:"]

    seen = []

    class Recording(ScriptedBackend):
        def generate(self, requests, settings):
            seen.append(settings.stop)
            return super().generate(requests, settings)

    evaluate(config(tmp_path, prompt_format="qwen-boxed"), backend=Recording(no_think), tokenizer=CharTokenizer())
    assert seen and set(seen) == {("<|im_end|>",)}


def test_report_warns_when_compared_runs_used_different_prompts(tmp_path):
    from dler.eval.protocol_warnings import protocol_warnings
    from dler.eval.run_folders import Run

    runs = []
    for name, kw in (("a", {}), ("b", dict(system_prompt="Be brief.")), ("c", dict(prompt_format="boxed"))):
        results, _ = run(config(tmp_path, name, **kw))
        runs.append(Run(tmp_path / name, name, results))
    warnings = "\n".join(protocol_warnings(runs))
    assert "runs differ in prompt format: boxed (c); r1 (a, b)" in warnings
    assert "runs differ in system prompt:" in warnings and "none (a, c)" in warnings
    assert "runs differ in chat template: off (raw text) (c); on (a, b)" in warnings
    assert "runs differ in answer region: after-think (a, b); whole (c)" in warnings
    assert "runs differ in the prompt text of math500[0]" in warnings
    same = [Run(tmp_path / "a", "a", runs[0].results), Run(tmp_path / "a2", "a2", runs[0].results)]
    assert not [w for w in protocol_warnings(same) if "prompt" in w]


def test_solve_rate_takes_the_prompt_flags(tmp_path, capsys):
    from dler.cli import main
    from dler.solve_rate import solve_rates

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{k}", "answer": g}) + "\n" for k, g in GOLDS.items()))

    rated = solve_rates("scripted", data, tmp_path / "r.jsonl", n=2, generator=ScriptedBackend(no_think),
                        tokenizer=CharTokenizer(), grader_workers=0, progress=False,
                        answer_region="whole")  # fmt: skip
    assert [r["solve_rate"] for r in rated] == [0.5, 0.5, 0.5]
    with pytest.raises(SystemExit):  # checked before any model: an unknown format
        main(["solve-rate", "--model", "m", "--data", str(data), "--output", str(tmp_path / "o.jsonl"),
              "--prompt-format", "r2"])  # fmt: skip
    assert "unknown --prompt-format 'r2'; did you mean 'r1'?" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl.work").exists()  # refused before anything was written
