"""Test-time scaling mode (`dler eval --parallel-k`): one request for K samples per question, timed; scaling.json."""

import json
import math
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))

from eval_fakes import CharTokenizer, ScriptedBackend, ctrl_c_after  # noqa: E402

from dler import cli  # noqa: E402
from dler.eval.errors import EvalInterrupted, ResumeError  # noqa: E402
from dler.eval.run import evaluate  # noqa: E402
from dler.eval.scaling import evaluate_scaling, scaling_entry  # noqa: E402
from dler.eval.settings import EvalConfig  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
ENTRY_KEYS = ["k", "pass_at_k", "pass_at_k_se", "mean_length", "latency_s", "latency_se", "problems"]


def answer_on_sample(text, seed, j):
    """Problem "9137" (aime24 row 0) is solved only by sample j=1, so K=1 misses it and K=2 finds it."""
    if "ordered pairs" in text and j == 1:
        return "<think>ok</think> \\boxed{9137}", 12, False
    return "<think>hmm</think> \\boxed{1}", 8 + j, False


class Timed(ScriptedBackend):
    """A scripted backend that takes 5 ms per sample of a request (so latency grows with K) and counts calls."""

    def __init__(self, respond):
        super().__init__(respond)
        self.calls = []

    def generate(self, requests, settings):
        self.calls.append((len(requests), settings.n, settings.max_tokens))
        time.sleep(0.005 * settings.n)
        return super().generate(requests, settings)


def config(tmp_path, **kw):
    settings = dict(model="fake-model", output_dir=str(tmp_path / "run"), benchmarks=["aime24", "math500"],
                    temperatures=[0.6], max_tokens=40, data_dir=str(FIXTURES), grader_workers=0, progress=False,
                    backend="transformers", parallel_k=[1, 2])  # fmt: skip
    settings.update(kw)
    return EvalConfig(**settings)


def test_scaling_entry_is_pass_at_exactly_k_with_standard_errors_over_questions():
    records = [
        {"benchmark": "b", "index": 0, "correct": [0.0, 1.0], "tokens": [10, 20], "latency_s": 1.0},
        {"benchmark": "b", "index": 1, "correct": [0.0, 0.0], "tokens": [30, 40], "latency_s": 3.0},
        {"benchmark": "b", "index": 2, "correct": [1.0, 1.0], "tokens": [50, 60], "latency_s": 2.0},
    ]
    e = scaling_entry(records, 2)
    assert list(e) == ENTRY_KEYS
    assert e["k"] == 2 and e["problems"] == 3
    assert e["pass_at_k"] == pytest.approx(2 / 3)
    assert e["pass_at_k_se"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))  # std(ddof=1) of [1, 0, 1]
    assert e["mean_length"] == pytest.approx(35.0)
    assert e["latency_s"] == pytest.approx(2.0) and e["latency_se"] == pytest.approx(1 / math.sqrt(3))
    assert scaling_entry(records[:1], 2)["pass_at_k_se"] is None  # one question: no standard error
    with pytest.raises(ValueError, match="has 2 samples, not K=4"):
        scaling_entry(records, 4)


def test_scaling_run_writes_scaling_json_with_the_schema(tmp_path):
    backend = Timed(answer_on_sample)
    results = evaluate_scaling(config(tmp_path), backend=backend, tokenizer=CharTokenizer())
    saved = json.loads((tmp_path / "run" / "scaling.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert list(saved) == ["model", "backend", "benchmarks", "protocol"]
    assert saved["model"] == "fake-model" and saved["backend"] == "scripted"
    assert list(saved["benchmarks"]) == ["aime24", "math500"]
    for entries in saved["benchmarks"].values():
        assert [e["k"] for e in entries] == [1, 2]
        for e in entries:
            assert list(e) == ENTRY_KEYS and e["problems"] in (2, 3)
            assert all(isinstance(e[key], float) for key in ENTRY_KEYS if key not in ("k", "problems"))
    aime = {e["k"]: e for e in saved["benchmarks"]["aime24"]}
    assert aime[1]["pass_at_k"] == 0.0 and aime[2]["pass_at_k"] == 0.5  # sample j=1 solves problem 0
    assert aime[2]["latency_s"] > aime[1]["latency_s"] > 0
    # one request per question (n=K), questions one at a time, after one short warm-up request
    assert backend.calls[0] == (1, 1, 16)
    assert backend.calls[1:] == [(1, 1, 40)] * 5 + [(1, 2, 40)] * 5
    protocol = saved["protocol"]
    assert list(protocol) == ["model", "backend", "mode", "sampling", "prompt_template", "chat_template", "prompt",
                              "prompt_example", "grader", "pass_at_k", "latency", "resume_key", "reproducibility",
                              "config", "command", "sessions", "backend_info", "benchmarks", "limit", "versions",
                              "hardware"]  # fmt: skip
    assert list(protocol["sessions"][0]) == ["started", "warmup_s", "finished", "questions_timed", "reproducibility"]
    assert protocol["sampling"]["temperature"] == 0.6 and protocol["sampling"]["ks"] == [1, 2]
    assert protocol["backend"] == "scripted" and "{problem}" in protocol["prompt_template"]
    assert "wall-clock" in protocol["latency"] and protocol["sessions"][0]["warmup_s"] >= 0
    assert protocol["benchmarks"]["aime24"]["dataset_revision"].startswith("sha256:")
    line = json.loads((tmp_path / "run" / "scaling" / "aime24.k2.jsonl").read_text().splitlines()[0])
    assert list(line)[:3] == ["k", "latency_s", "benchmark"] and len(line) == 16
    assert line["k"] == 2 and len(line["responses"]) == 2 and line["latency_s"] > 0


def test_scaling_rerun_is_a_no_op_and_an_interrupted_run_resumes(tmp_path):
    first = evaluate_scaling(config(tmp_path), backend=Timed(answer_on_sample), tokenizer=CharTokenizer())
    again = Timed(answer_on_sample)
    second = evaluate_scaling(config(tmp_path), backend=again, tokenizer=CharTokenizer())
    assert again.calls == [] and second["benchmarks"] == first["benchmarks"]
    assert [s.get("questions_timed") for s in second["protocol"]["sessions"]] == [10, 0]

    cut = config(tmp_path / "cut")
    with pytest.raises(EvalInterrupted) as info:
        evaluate_scaling(cut, backend=Timed(answer_on_sample), tokenizer=CharTokenizer(), on_problem=ctrl_c_after(6))
    assert (info.value.done, info.value.total) == (6, 10)
    partial = json.loads((tmp_path / "cut" / "run" / "scaling.json").read_text())
    assert [e["k"] for e in partial["benchmarks"]["aime24"]] == [1]  # K=1 was complete when K=2 began
    resumed = Timed(answer_on_sample)
    out = evaluate_scaling(cut, backend=resumed, tokenizer=CharTokenizer())
    assert [n for _, n, _ in resumed.calls[1:]] == [2, 2, 2, 2]  # only the K=2 questions left
    assert [e["pass_at_k"] for e in out["benchmarks"]["aime24"]] == [0.0, 0.5]


def test_scaling_resume_refuses_settings_or_gpus_that_change_the_timing(tmp_path, monkeypatch):
    import dler.eval.scaling as S

    evaluate_scaling(config(tmp_path, limit=1), backend=Timed(answer_on_sample), tokenizer=CharTokenizer())
    with pytest.raises(ResumeError, match="max_tokens: 40 there, 64 now"):
        evaluate_scaling(config(tmp_path, max_tokens=64), backend=Timed(answer_on_sample), tokenizer=CharTokenizer())
    monkeypatch.setattr(S, "_gpu_names", lambda: ["NVIDIA H100 80GB HBM3"])
    with pytest.raises(ResumeError, match=r"gpus: \[\] there, \['NVIDIA H100 80GB HBM3'\] now"):
        evaluate_scaling(config(tmp_path), backend=Timed(answer_on_sample), tokenizer=CharTokenizer())


def test_scaling_mode_and_the_usual_evaluation_are_separate_calls(tmp_path):
    with pytest.raises(ValueError, match="evaluate_scaling"):
        evaluate(config(tmp_path), backend=Timed(answer_on_sample), tokenizer=CharTokenizer())
    with pytest.raises(ValueError, match="--data-parallel-size 1"):
        config(tmp_path, backend="vllm", data_parallel_size=2).validate(check_model=False)


@pytest.mark.slow
def test_scaling_end_to_end_on_the_tiny_model_from_the_command_line(tmp_path, tiny_model_dir, capsys):
    """`dler eval --parallel-k 1,2` with the transformers backend on CPU: 2 questions, 8 tokens; rerun is a no-op."""
    run = tmp_path / "run"
    args = ["eval", "--model", tiny_model_dir, "--data-dir", str(FIXTURES), "--benchmarks", "aime24",
            "--parallel-k", "1,2", "--max-tokens", "8", "--backend", "transformers", "--output-dir", str(run),
            "--grader-workers", "0", "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "test-time scaling" in out and "K=2" in out
    scaling = json.loads((run / "scaling.json").read_text())
    assert scaling["backend"] == "transformers" and scaling["model"] == tiny_model_dir
    entries = scaling["benchmarks"]["aime24"]
    assert [e["k"] for e in entries] == [1, 2] and all(list(e) == ENTRY_KEYS for e in entries)
    assert all(e["problems"] == 2 and 1 <= e["mean_length"] <= 8 and e["latency_s"] > 0 for e in entries)
    assert scaling["protocol"]["backend_info"]["device"] == "cpu"
    before = (run / "scaling" / "aime24.k2.jsonl").read_text()
    assert cli.main(args) == 0  # everything timed already: nothing is generated again
    assert (run / "scaling" / "aime24.k2.jsonl").read_text() == before
    assert json.loads((run / "scaling.json").read_text())["benchmarks"] == scaling["benchmarks"]
