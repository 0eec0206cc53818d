"""dler.eval.run: the eval loop, its resumable JSONL, the protocol record, and the transformers backend."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))

from eval_fakes import CharTokenizer, ScriptedBackend  # noqa: E402

from dler.eval.run import (  # noqa: E402
    EvalConfig,
    GenerationStore,
    ResumeError,
    derive_seed,
    evaluate,
)

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
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
    assert m["pass@k"]["4"] == 1.0 and m["maj@k"]["1"] == 1.0 and m["maj@k"]["2"] == 1.0
    assert m["mean_length_correct"] == pytest.approx(20) and m["mean_length_incorrect"] == pytest.approx(30)
    assert m["truncation_rate"] == pytest.approx(0.25)
    assert m["grading"] == {"correct": 6, "wrong": 6}
    assert results["overall"]["pass@1"] == pytest.approx(0.5)
    records = lines(Path(run_dir) / "generations" / "math500.jsonl")
    assert [r["index"] for r in records] == [0, 1, 2]
    r = records[1]
    assert r["correct"] == [1.0, 0.0, 1.0, 0.0] and r["extracted"][0] == "\\frac{7}{13}"
    assert r["tokens"] == [10, 20, 30, 40] and r["truncated"] == [False, False, False, True]
    assert r["seed"] == derive_seed(0, "math500", 1)
    assert "Let's think step by step" in backend.prompts[0] and backend.prompts[0].startswith("<user>")
    assert not backend.closed  # a backend passed in belongs to the caller


def test_protocol_is_recorded(tmp_path):
    out = evaluate(config(tmp_path, seed=3), backend=ScriptedBackend(oracle), tokenizer=CharTokenizer())
    protocol = next(iter(out.values()))["protocol"]
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
