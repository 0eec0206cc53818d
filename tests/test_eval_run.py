"""dler.eval.run and the modules it runs on: the eval loop, its resumable JSONL (store), the protocol record,
the checks before loading (preflight), and the transformers backend."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))

from eval_fakes import CharTokenizer, ScriptedBackend, ctrl_c_after  # noqa: E402

from dler.eval.errors import ResumeError  # noqa: E402
from dler.eval.protocol import derive_seed  # noqa: E402
from dler.eval.run import evaluate  # noqa: E402
from dler.eval.settings import EvalConfig  # noqa: E402
from dler.eval.store import GenerationStore  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
# the keys of a generations line, in their stored order: resuming reads lines written by earlier versions
RECORD_KEYS = ["benchmark", "index", "digest", "seed", "prompt_tokens", "problem", "gold", "responses", "tokens",
               "truncated", "finish_reasons", "correct", "extracted", "status"]  # fmt: skip
GOLDS = {"7}{13}": "\\frac{7}{13}", "sqrt{12}": "2\\sqrt{3}", "(0,3)": "(3, \\frac{\\pi}{2})"}


def oracle(text, seed, j):
    """Right on even samples (with the gold, written differently), wrong on odd ones; lengths depend on j."""
    for key, gold in GOLDS.items():
        if key in text:
            answer = gold if j % 2 == 0 else "42"
            return f"<think>{'hmm ' * j}</think> The answer is \\boxed{{{answer}}}", 10 * (j + 1), j == 3
    return "no idea", 5, False


def config(tmp_path, **kw):
    settings = dict(model="fake-model", output_dir=str(tmp_path / "run"), benchmarks=["math500"], n=4,
                    temperatures=[0.6], max_tokens=40, data_dir=str(FIXTURES), grader_workers=0, progress=False,
                    backend="transformers")  # fmt: skip
    settings.update(kw)
    return EvalConfig(**settings)


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_scripted_run_grades_with_the_math_reward_and_scores(tmp_path):
    backend = ScriptedBackend(oracle)
    out = evaluate(config(tmp_path), backend=backend, tokenizer=CharTokenizer())
    ((run_dir, results),) = out.items()
    m = results["benchmarks"]["math500"]
    assert m["pass@1"] == pytest.approx(0.5)  # samples 0 and 2 right on each of the 3 problems
    # answers gold, 42, gold, 42: a random k-subset's vote is right half the time (ties split evenly)
    assert m["pass@k"]["4"] == 1.0 and m["maj@k"]["1"] == 0.5 and m["maj@k"]["2"] == 0.5
    assert m["mean_length_correct"] == pytest.approx(20) and m["mean_length_incorrect"] == pytest.approx(30)
    assert m["truncation_rate"] == pytest.approx(0.25)
    assert m["grading"] == {"correct": 6, "wrong": 6}
    assert results["overall"]["pass@1"] == pytest.approx(0.5)
    records = lines(Path(run_dir) / "generations" / "math500.jsonl")
    assert [r["index"] for r in records] == [0, 1, 2]
    assert all(list(r) == RECORD_KEYS for r in records)
    r = records[1]
    assert r["correct"] == [1.0, 0.0, 1.0, 0.0] and r["extracted"][0] == "\\frac{7}{13}"
    assert r["tokens"] == [10, 20, 30, 40] and r["truncated"] == [False, False, False, True]
    assert r["seed"] == derive_seed(0, "math500", 1)
    assert "Let's think step by step" in backend.prompts[0] and backend.prompts[0].startswith("<user>")
    assert not backend.closed  # a backend passed in belongs to the caller


def test_protocol_is_recorded(tmp_path):
    out = evaluate(config(tmp_path, seed=3), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    protocol = next(iter(out.values()))["protocol"]
    assert list(protocol) == ["model", "backend", "sampling", "prompt_template", "chat_template", "prompt",
                              "prompt_example", "chunk_size", "grader", "resume_key", "reproducibility", "config",
                              "command", "sessions", "backend_info", "benchmarks", "limit", "versions",
                              "hardware"]  # fmt: skip
    assert list(protocol["sessions"][0]) == ["started", "finished", "problems_generated", "reproducibility"]
    assert protocol["model"] == "fake-model" and protocol["backend"] == "scripted"
    assert protocol["sampling"] == {"n": 4, "n_requested": 4, "temperature": 0.6, "top_p": 0.95, "top_k": None,
                                    "max_tokens": 40, "seed": 3, "greedy": False}  # fmt: skip
    for dist in ("dler", "torch", "transformers", "trl", "math-verify", "datasets", "vllm"):
        assert dist in protocol["versions"]
    assert protocol["versions"]["math-verify"] and protocol["versions"]["vllm"] is None
    src = protocol["benchmarks"]["math500"]
    assert src["type"] == "local" and len(src["file_sha256"]) == 64
    assert protocol["sessions"][0]["started"] and protocol["sessions"][0]["problems_generated"] == 3
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["protocol"]["resume_key"]["temperature"] == 0.6


def test_grader_is_recorded_from_the_grader_used_and_checks_golds(tmp_path):
    out = evaluate(config(tmp_path, grader="released"), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    results = next(iter(out.values()))
    protocol = results["protocol"]
    assert protocol["grader"]["grader"] == "released" and "released" in protocol["grader"]["description"]
    assert protocol["resume_key"]["grader"] == "released"
    assert protocol["benchmarks"]["math500"]["gold_check"] == {"grader": "released", "checked": 3, "invalid": 0,
                                                                "rows": []}  # fmt: skip
    assert results["benchmarks"]["math500"]["pass@1"] == pytest.approx(0.5)
    # a grader passed in is what the protocol names, whatever the config says
    from dler.rewards import MathReward

    with MathReward(num_workers=0, grader="released") as grader:
        out = evaluate(config(tmp_path / "b"), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer(),
                       grader=grader)  # fmt: skip
    protocol = next(iter(out.values()))["protocol"]
    assert protocol["grader"]["grader"] == "released" and protocol["resume_key"]["grader"] == "released"

    class Plain:
        """A grader with no describe() and no grader name: the protocol names it by its type."""

        def __init__(self, inner):
            self.inner = inner

        def grade(self, texts, golds):
            return self.inner.grade(texts, golds)

    with MathReward(num_workers=0) as inner:
        out = evaluate(config(tmp_path / "c"), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer(),
                       grader=Plain(inner))  # fmt: skip
    protocol = next(iter(out.values()))["protocol"]
    assert protocol["grader"] == {"reward": f"{__name__}.{Plain.__qualname__}", "grader": None}


def test_resume_refuses_another_grader(tmp_path):
    evaluate(config(tmp_path), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    with pytest.raises(ResumeError, match="grader: 'dler' there, 'released' now"):
        evaluate(config(tmp_path, grader="released"), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    # a run written before the grader was recorded was graded by the dler grader
    path = tmp_path / "run" / "protocol.json"
    protocol = json.loads(path.read_text())
    del protocol["resume_key"]["grader"]
    path.write_text(json.dumps(protocol))
    evaluate(config(tmp_path), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    with pytest.raises(ResumeError, match="grader: 'dler' there, 'released' now"):
        evaluate(config(tmp_path, grader="released"), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())


def test_validate_returns_the_resolved_copy_and_leaves_the_config_as_given(tmp_path, monkeypatch):
    import dler.eval.generate as G

    monkeypatch.setattr(G, "vllm_available", lambda: False)
    given = config(tmp_path, backend="auto", parallel_k=[4, 1, 2])
    resolved = given.validate(check_model=False)
    assert (resolved.backend, resolved.auto_backend, resolved.parallel_k) == ("transformers", True, [1, 2, 4])
    assert (given.backend, given.auto_backend, given.parallel_k) == ("auto", False, [4, 1, 2])
    assert resolved.validate(check_model=False) == resolved  # resolving again changes nothing
    explicit = config(tmp_path).validate(check_model=False)
    assert (explicit.backend, explicit.auto_backend, explicit.parallel_k) == ("transformers", False, None)


def test_invalid_grader_is_rejected_naming_the_option(tmp_path):
    with pytest.raises(ValueError, match="--grader must be one of 'dler', 'released'; got 'verl'"):
        config(tmp_path, grader="verl").validate()


def test_rerunning_a_finished_run_generates_nothing(tmp_path):
    evaluate(config(tmp_path), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    again = ScriptedBackend(oracle)
    out = evaluate(config(tmp_path), backend=again, tokenizer=CharTokenizer())
    assert again.prompts == []
    protocol = next(iter(out.values()))["protocol"]
    assert [s["problems_generated"] for s in protocol["sessions"]] == [3, 0]


def test_resume_refuses_different_settings(tmp_path):
    evaluate(config(tmp_path), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    with pytest.raises(ResumeError, match="max_tokens: 40 there, 80 now"):
        evaluate(config(tmp_path, max_tokens=80), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())


def test_resume_refuses_changed_problems(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "math500.jsonl").write_text(json.dumps({"problem": "A", "answer": "1"}) + "\n")
    evaluate(config(tmp_path, data_dir=str(data)), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    (data / "math500.jsonl").write_text(json.dumps({"problem": "B", "answer": "1"}) + "\n")
    with pytest.raises(ResumeError, match="differs from the one generated before"):
        evaluate(config(tmp_path, data_dir=str(data)), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())


def test_temperature_sweep_writes_one_folder_per_temperature_and_greedy_takes_one_sample(tmp_path):
    out = evaluate(
        config(tmp_path, temperatures=[0.0, 0.6]), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer()
    )
    assert sorted(Path(p).name for p in out) == ["t0", "t0.6"]
    t0 = out[str(tmp_path / "run" / "t0")]
    assert t0["protocol"]["sampling"]["n"] == 1 and t0["protocol"]["sampling"]["greedy"]
    assert t0["benchmarks"]["math500"]["pass@k"] == {"1": 1.0}
    assert out[str(tmp_path / "run" / "t0.6")]["benchmarks"]["math500"]["n"] == 4


class Stop(Exception):
    pass


def interrupt_after(count):
    seen = []

    def hook(benchmark, index):
        seen.append((benchmark, index))
        if len(seen) == count:
            raise Stop

    return hook


def test_interrupted_scripted_run_resumes_without_regenerating(tmp_path):
    cfg = config(tmp_path, benchmarks=["math500", "aime24"], chunk_size=1)
    with pytest.raises(Stop):
        evaluate(cfg, backend=ScriptedBackend(oracle), tokenizer=CharTokenizer(), on_problem=interrupt_after(2))
    path = tmp_path / "run" / "generations" / "math500.jsonl"
    with open(path, "a") as f:  # a write cut off by the interruption
        f.write('{"benchmark": "math500", "index": 2, "resp')
    resumed = ScriptedBackend(oracle)
    out = evaluate(cfg, backend=resumed, tokenizer=CharTokenizer())
    assert len(resumed.prompts) == 1 + 2  # math500 problem 2, both aime24 problems: nothing else
    assert [r["index"] for r in lines(path)] == [0, 1, 2]
    full = evaluate(config(tmp_path / "b", benchmarks=["math500", "aime24"], chunk_size=1),
                    backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())  # fmt: skip
    a, b = next(iter(out.values())), next(iter(full.values()))
    assert a["benchmarks"] == b["benchmarks"]


# --------------------------------------------------------------------------------------------- the JSONL store


def test_store_drops_an_incomplete_last_line_and_appends_cleanly(tmp_path, caplog):
    path = tmp_path / "g.jsonl"
    path.write_text('{"index": 0, "x": 1}\n{"index": 1, "x": 2}\n{"index": 2, "x"')
    store = GenerationStore(path)
    assert sorted(store.load()) == [0, 1]
    assert "incomplete last line" in caplog.text
    store.append({"index": 2, "x": 3})
    store.close()
    assert sorted(GenerationStore(path).load()) == [0, 1, 2]


def test_store_completes_a_last_record_missing_its_newline(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"index": 0}\n{"index": 1}')
    store = GenerationStore(path)
    assert sorted(store.load()) == [0, 1]
    store.append({"index": 2})
    store.close()
    assert [json.loads(x)["index"] for x in path.read_text().splitlines()] == [0, 1, 2]


def test_store_refuses_a_corrupt_line_in_the_middle(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"index": 0}\ngarbage\n{"index": 2}\n')
    with pytest.raises(ResumeError, match="g.jsonl:2 is corrupt"):
        GenerationStore(path).load()


# --------------------------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    from dler.eval.generate import TransformersBackend

    return TransformersBackend(tiny_model_dir)


def test_transformers_backend_counts_tokens_to_eos_and_flags_truncation(tiny_backend):
    from dler.eval.benchmarks import build_prompt, prompt_ids
    from dler.eval.generate import Request, SamplingSettings

    tok = tiny_backend.tokenizer
    ids = prompt_ids(tok, build_prompt(tok, "1 + 1"))
    settings = SamplingSettings(n=6, temperature=1.0, top_p=1.0, max_tokens=4)
    out = tiny_backend.generate([Request(ids, 1), Request(ids[:-3], 2)], settings)
    assert len(out) == 2 and all(len(s) == 6 for s in out)
    samples = [s for row in out for s in row]
    assert all(1 <= s.tokens <= 4 for s in samples)
    assert all(s.truncated == (s.finish_reason == "length") for s in samples)
    assert all(s.tokens == 4 for s in samples if s.truncated)
    assert any(not s.truncated for s in samples)  # the warmed-up tiny model stops early
    again = tiny_backend.generate([Request(ids, 1), Request(ids[:-3], 2)], settings)
    assert again == out  # seeded per call
    greedy = tiny_backend.generate([Request(ids, 1)], SamplingSettings(1, 0.0, 0.95, 4))
    assert greedy == tiny_backend.generate([Request(ids, 9)], SamplingSettings(1, 0.0, 0.95, 4))
    assert tiny_backend.generation_config(SamplingSettings(2, 0.6, 0.95, 8)).top_k == 0  # only top_p truncates


def test_transformers_end_to_end_on_fixture_benchmarks(tmp_path, tiny_model_dir, tiny_backend):
    cfg = config(tmp_path, model=tiny_model_dir, benchmarks=["math500", "amc", "olympiad"], max_tokens=16)
    out = evaluate(cfg, backend=tiny_backend)
    results = next(iter(out.values()))
    for name in ("math500", "amc", "olympiad"):
        m = results["benchmarks"][name]
        assert m["pass@1"] == 0.0  # the tiny model never writes </think> and a boxed answer
        assert m["n"] == 4 and 1 <= m["mean_length"] <= 16
        assert set(m["pass@k"]) == {"1", "2", "4"}
    assert results["protocol"]["backend_info"]["device"] == "cpu"
    assert results["protocol"]["chunk_size"] == 8  # 32 sequences per call: 8 problems x 4 samples


def test_transformers_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir, tiny_backend):
    """Interrupt mid-chunk, leave a half-written line, resume: same records as one uninterrupted run."""

    class Counting:
        name, per_request_seed = "transformers", False

        def __init__(self, inner):
            self.inner, self.prompts = inner, 0

        def generate(self, requests, settings):
            self.prompts += len(requests)
            return self.inner.generate(requests, settings)

        def info(self):
            return self.inner.info()

        def close(self):
            pass

    def cfg(d):
        return config(d, model=tiny_model_dir, benchmarks=["math500", "aime24"], chunk_size=2, max_tokens=12)

    full = evaluate(cfg(tmp_path / "full"), backend=Counting(tiny_backend))
    with pytest.raises(Stop):  # after math500 problem 0: its chunk-mate 1 is not written yet
        evaluate(cfg(tmp_path / "cut"), backend=Counting(tiny_backend), on_problem=interrupt_after(1))
    path = tmp_path / "cut" / "run" / "generations" / "math500.jsonl"
    with open(path, "a") as f:
        f.write('{"benchmark": "math500", "ind')
    counting = Counting(tiny_backend)
    resumed = evaluate(cfg(tmp_path / "cut"), backend=counting)
    # chunk [0, 1] again (transformers seeds per call), chunk [2], aime24 chunk [0, 1]; problem 0 is not rewritten
    assert counting.prompts == 2 + 1 + 2
    assert [r["index"] for r in lines(path)] == [0, 1, 2]
    for name in ("math500", "aime24"):
        a = lines(tmp_path / "full" / "run" / "generations" / f"{name}.jsonl")
        b = lines(tmp_path / "cut" / "run" / "generations" / f"{name}.jsonl")
        assert a == b
    assert next(iter(resumed.values()))["benchmarks"] == next(iter(full.values()))["benchmarks"]
    sessions = next(iter(resumed.values()))["protocol"]["sessions"]
    assert [s.get("problems_generated") for s in sessions] == [None, 4]


@pytest.mark.slow
def test_grading_pool_is_used_and_closed(tmp_path):
    """The default path grades in worker processes (here one) and stops them at the end."""
    from dler.rewards import MathReward

    grader = MathReward(num_workers=1)
    try:
        out = evaluate(config(tmp_path), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer(), grader=grader)
        assert next(iter(out.values()))["benchmarks"]["math500"]["pass@1"] == pytest.approx(0.5)
        assert grader.pool is not None
    finally:
        grader.close()


# --------------------------------------------------------------------------------------------- outputs and checks


def test_per_problem_csv_next_to_the_generations(tmp_path):
    import csv

    evaluate(config(tmp_path), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    path = tmp_path / "run" / "generations" / "math500.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["benchmark", "index", "samples", "correct", "mean_correct", "mean_length", "truncated"]
    assert [r["index"] for r in rows] == ["0", "1", "2"]
    assert rows[1] == {"benchmark": "math500", "index": "1", "samples": "4", "correct": "2", "mean_correct": "0.5",
                       "mean_length": "25.0", "truncated": "1"}  # fmt: skip


def test_results_record_temperature_backend_and_prompt_template_for_comparisons(tmp_path):
    template = "Solve: {problem}"
    evaluate(config(tmp_path, prompt_template=template), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    protocol = json.loads((tmp_path / "run" / "results.json").read_text())["protocol"]
    assert protocol["sampling"]["temperature"] == 0.6
    assert protocol["backend"] == "scripted"
    assert protocol["prompt_template"] == template


def test_a_mistyped_model_path_is_refused_before_anything_is_written(tmp_path):
    from dler.eval.errors import EvalSettingsError

    with pytest.raises(EvalSettingsError, match="--model runs/my-modle/checkpoint-100: no such file or folder"):
        evaluate(config(tmp_path, model="runs/my-modle/checkpoint-100"))
    (tmp_path / "models" / "dler-1.5b").mkdir(parents=True)
    (tmp_path / "models" / "dler-1.5b" / "config.json").write_text("{}")
    typo = str(tmp_path / "models" / "dlr-1.5b")
    with pytest.raises(EvalSettingsError, match=f"no such file or folder.*did you mean {tmp_path}/models/dler-1.5b"):
        evaluate(config(tmp_path, model=typo))
    assert not (tmp_path / "run").exists()


def test_check_model_id(tmp_path, monkeypatch):
    from dler.eval.errors import EvalSettingsError
    from dler.eval.model_id import check_model_id

    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalSettingsError, match="has no config.json"):
        check_model_id(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text("{}")
    check_model_id(str(tmp_path / "empty"))
    for bad in ("./missing", "../missing", "a/b/c", "owner//name", "owner/na me"):
        with pytest.raises(EvalSettingsError, match="no such file or folder"):
            check_model_id(bad)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EvalSettingsError, match="HF_HUB_OFFLINE=1 while the hub model someone/unknown-model is not"):
        check_model_id("someone/unknown-model")


def test_a_protocol_from_a_run_that_generated_nothing_does_not_block_the_corrected_command(tmp_path, caplog):
    """A start that failed before generating anything (e.g. the model would not load) leaves protocol.json;
    rerunning with corrected settings replaces it instead of refusing "different settings"."""

    class Broken(ScriptedBackend):
        def generate(self, requests, settings):
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate(config(tmp_path, max_tokens=99), backend=Broken(oracle), tokenizer=CharTokenizer())
    assert (tmp_path / "run" / "protocol.json").exists()
    out = evaluate(config(tmp_path), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    assert "replacing the settings of a run that generated nothing" in caplog.text
    protocol = next(iter(out.values()))["protocol"]
    assert protocol["resume_key"]["max_tokens"] == 40 and len(protocol["sessions"]) == 1


def test_ctrl_c_keeps_what_was_written_and_reports_progress(tmp_path):
    from dler.eval.errors import EvalInterrupted

    cfg = config(tmp_path, benchmarks=["math500", "aime24"], chunk_size=1)
    with pytest.raises(EvalInterrupted) as info:
        evaluate(cfg, backend=ScriptedBackend(oracle), tokenizer=CharTokenizer(), on_problem=ctrl_c_after(2))
    assert isinstance(info.value, KeyboardInterrupt)
    assert (info.value.done, info.value.total) == (2, 5)
    assert info.value.message == "interrupted; rerun the same command to resume (2 of 5 problems done)"
    resumed = ScriptedBackend(oracle)
    evaluate(cfg, backend=resumed, tokenizer=CharTokenizer())
    assert len(resumed.prompts) == 3


def test_model_context_length_follows_vllm():
    from dler.eval.preflight import model_context_length

    assert model_context_length({"max_position_embeddings": 131072}) == 131072
    assert model_context_length({"max_position_embeddings": 4096, "seq_length": 2048}) == 2048
    assert (
        model_context_length({"max_position_embeddings": 32768, "rope_scaling": {"type": "linear", "factor": 4}})
        == 131072
    )
    yarn = {
        "max_position_embeddings": 131072,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
    }
    assert model_context_length(yarn) == 131072
    assert model_context_length({"text_config": {"max_position_embeddings": 8192}}) == 8192
    assert model_context_length({}) is None and model_context_length(None) is None


QWEN_1_5B = {"model_type": "qwen2", "hidden_size": 1536, "num_hidden_layers": 28, "intermediate_size": 8960,
             "vocab_size": 151936, "num_attention_heads": 12, "num_key_value_heads": 2, "tie_word_embeddings": True,
             "max_position_embeddings": 131072}  # fmt: skip


def test_auto_backend_on_cpu_warns_with_a_time_estimate_before_loading(tmp_path, tiny_model_dir, monkeypatch, caplog):
    """--backend auto without vLLM or CUDA falls back to transformers on the CPU: for a long generation it says so,
    with a rough duration, before the model is loaded (the tokenizer is all it needs)."""
    import shutil

    import dler.eval.generate as G
    import dler.eval.preflight as P

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "config.json").write_text(json.dumps(QWEN_1_5B))  # a 1.5B model's shape, the tiny tokenizer
    monkeypatch.setattr(G, "vllm_available", lambda: False)
    monkeypatch.setattr(P, "_cuda_available", lambda: False)

    class Loading(Exception):
        pass

    def loading(*args, **kwargs):
        raise Loading

    monkeypatch.setattr(G.TransformersBackend, "__init__", loading)
    caplog.set_level("WARNING", logger="dler.eval.preflight")
    with pytest.raises(Loading):
        evaluate(config(tmp_path, model=str(model), backend="auto", n=16, max_tokens=32768))
    (warning,) = [r.getMessage() for r in caplog.records if "falls back to transformers on the CPU" in r.getMessage()]
    assert "48 samples of up to 32,768 tokens" in warning and "1.5B-parameter model" in warning
    assert "up to about" in warning and "--backend transformers" in warning
    caplog.clear()
    with pytest.raises(Loading):  # chosen explicitly: no warning
        evaluate(config(tmp_path / "b", model=str(model), backend="transformers", n=16, max_tokens=32768))
    assert "falls back" not in caplog.text
    with pytest.raises(Loading):  # a short run: no warning
        evaluate(config(tmp_path / "c", model=str(model), backend="auto", n=2, max_tokens=64))
    assert "falls back" not in caplog.text


def test_cpu_rate_estimate_is_in_a_plausible_range():
    from dler.eval.preflight import cpu_tokens_per_second

    assert 5 < cpu_tokens_per_second(1.5e9, 32, cores=8) < 200
    assert cpu_tokens_per_second(1e6, 32, cores=2) > 10_000


def test_an_engine_error_caused_by_ctrl_c_is_reported_as_the_interruption(tmp_path):
    """Ctrl-C also reaches vLLM's engine processes; the error their exit raises here can come first. After a
    SIGINT it is reported as the interruption (resume message), not as a crash."""
    import signal

    from dler.eval.errors import EvalInterrupted

    class DyingEngine(ScriptedBackend):
        def generate(self, requests, settings):
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                raise RuntimeError("EngineDeadError: EngineCore encountered an issue") from None

    with pytest.raises(EvalInterrupted) as info:
        evaluate(config(tmp_path), backend=DyingEngine(oracle), tokenizer=CharTokenizer())
    assert (info.value.done, info.value.total) == (0, 3)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    with pytest.raises(RuntimeError, match="out of memory"):  # without SIGINT an error stays an error

        class Broken(ScriptedBackend):
            def generate(self, requests, settings):
                raise RuntimeError("CUDA out of memory")

        evaluate(config(tmp_path / "b"), backend=Broken(oracle), tokenizer=CharTokenizer())


def test_check_model_id_asks_the_hub_when_online(monkeypatch, caplog):
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    import dler.eval.model_id as P
    from dler.eval.errors import EvalSettingsError

    response = SimpleNamespace(headers={}, request=None)
    answers = {
        "owner/missing": RepositoryNotFoundError("404", response=response),
        "owner/gated": GatedRepoError("403", response=response),
        "owner/flaky": ConnectionError("no route to host"),
    }
    asked = []

    def model_info(self, repo_id, timeout=None, **kwargs):
        asked.append(repo_id)
        if repo_id in answers:
            raise answers[repo_id]
        return SimpleNamespace(id=repo_id)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(P, "_HUB_MODELS_SEEN", set())
    monkeypatch.setattr(P, "hub_reachable", lambda: True)  # the probe's answer; this test is about the hub's
    with pytest.raises(EvalSettingsError, match="the hub has no model owner/missing"):
        P.check_model_id("owner/missing")
    P.check_model_id("owner/gated")  # exists; loading needs a token
    P.check_model_id("owner/model")
    P.check_model_id("owner/model")  # asked once
    P.check_model_id("owner/flaky")  # the hub cannot be asked: the loader will tell
    assert "could not check --model owner/flaky" in caplog.text
    assert asked == ["owner/missing", "owner/gated", "owner/model", "owner/flaky"]
