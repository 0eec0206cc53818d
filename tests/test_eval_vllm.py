"""The vLLM backend's argument mapping and output handling, against a fake `vllm` module (vLLM needs a GPU)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))

from eval_fakes import FAKE_VLLM_DIR, CharTokenizer, load_fake_vllm  # noqa: E402

from dler.eval import generate as G  # noqa: E402
from dler.eval import vllm_backend as V  # noqa: E402
from dler.eval.generate import Request, SamplingSettings  # noqa: E402
from dler.eval.vllm_backend import VLLMBackend  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture
def fake_vllm(monkeypatch):
    module = load_fake_vllm()
    module.LLM.instances = []
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_llm_arguments(fake_vllm):
    backend = VLLMBackend("/models/dler-7b", tensor_parallel_size=2, seed=7, max_model_len=34816,
                          gpu_memory_utilization=0.85, dtype="bfloat16", enforce_eager=True,
                          llm_kwargs={"swap_space": 8})  # fmt: skip
    (llm,) = fake_vllm.LLM.instances
    assert llm.model == "/models/dler-7b"
    assert llm.kwargs == {"tensor_parallel_size": 2, "seed": 7, "gpu_memory_utilization": 0.85, "dtype": "bfloat16",
                          "enforce_eager": True, "max_model_len": 34816, "swap_space": 8}  # fmt: skip
    assert "data_parallel_size" not in llm.kwargs  # vLLM's offline LLM refuses it in one process
    assert backend.info()["llm_kwargs"]["model"] == "/models/dler-7b"


def test_default_llm_arguments_leave_max_model_len_to_vllm(fake_vllm):
    VLLMBackend("m")
    (llm,) = fake_vllm.LLM.instances
    assert "max_model_len" not in llm.kwargs
    assert llm.kwargs["tensor_parallel_size"] == 1 and llm.kwargs["gpu_memory_utilization"] == 0.9


def test_engine_seeding_by_default_streams_through_enqueue(fake_vllm):
    """No per-request seed (vLLM's fast sampling path): one `enqueue` of every request, results as they finish."""
    backend = VLLMBackend("m", progress=False)
    assert backend.seeding == "engine" and not backend.per_request_seed
    settings = SamplingSettings(n=3, temperature=0.6, top_p=0.95, max_tokens=5)
    out = backend.generate([Request([1, 2, 3], 11), Request([4, 5], 12)], settings)
    (llm,) = fake_vllm.LLM.instances
    (call,) = llm.calls
    assert call["kind"] == "enqueue" and call["use_tqdm"] is False
    assert call["prompts"] == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4, 5]}]
    assert call["params"] == [{"n": 3, "temperature": 0.6, "top_p": 0.95, "max_tokens": 5,
                               "skip_special_tokens": False}] * 2  # fmt: skip
    # fake lengths without a seed: 1 + (engine seed + prompt length + j) % max_tokens
    assert [s.tokens for s in out[0]] == [4, 5, 1] and [s.tokens for s in out[1]] == [3, 4, 5]
    assert backend.reproducibility()["seeding"] == "engine"
    assert backend.reproducibility()["per_problem_reproducible"] is False


def test_seed_per_request_sets_sampling_seeds_and_results_stream_out_of_order(fake_vllm):
    backend = VLLMBackend("m", progress=False, seed_per_request=True)
    settings = SamplingSettings(n=3, temperature=0.6, top_p=0.95, max_tokens=5)
    requests = [Request([1, 2, 3], 13), Request([4, 5], 11), Request([6], 12)]
    batches = list(backend.generate_stream(requests, settings))
    (call,) = fake_vllm.LLM.instances[0].calls
    assert [p["seed"] for p in call["params"]] == [13, 11, 12]
    assert [i for batch in batches for i, _ in batch] == [1, 2, 0]  # the fake finishes the shortest first
    out = backend.generate(requests, settings)
    # fake lengths: 1 + (seed + j) % max_tokens; finish_reason "length" at the cap
    assert [s.tokens for s in out[1]] == [2, 3, 4] and [s.tokens for s in out[2]] == [3, 4, 5]
    assert [s.truncated for s in out[2]] == [False, False, True]
    assert out[2][2].finish_reason == "length" and out[1][0].finish_reason == "stop"
    assert out[1][0].text.endswith("\\boxed{2}")


def test_closing_the_stream_early_aborts_the_requests_left(fake_vllm):
    backend = VLLMBackend("m", progress=False)
    stream = backend.generate_stream([Request([1] * (i + 1), i) for i in range(4)], SamplingSettings(1, 0.6, 1.0, 50))
    first = next(stream)
    stream.close()  # what an exception or Ctrl-C in the consumer does
    engine = fake_vllm.LLM.instances[0].llm_engine
    assert len(first) == 1 and len(engine.aborted) == 3 and not engine.has_unfinished_requests()


def test_reproducible_sets_batch_invariance_before_the_engine_starts(fake_vllm, monkeypatch):
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")  # restored after the test
    backend = VLLMBackend("m", seed_per_request=True, batch_invariant=True)
    (llm,) = fake_vllm.LLM.instances
    assert llm.env["VLLM_BATCH_INVARIANT"] == "1"
    info = backend.info()["reproducibility"]
    assert info["seeding"] == "request" and info["VLLM_BATCH_INVARIANT"] == "1"
    assert info["per_problem_reproducible"] is True and info["engine_seeds"] == [0]


def test_greedy_maps_to_temperature_zero_and_top_p_one(fake_vllm):
    kwargs = VLLMBackend.sampling_kwargs(SamplingSettings(1, 0.0, 0.95, 32768), seed=5)
    assert kwargs == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 32768, "seed": 5,
                      "skip_special_tokens": False}  # fmt: skip
    assert "seed" not in VLLMBackend.sampling_kwargs(SamplingSettings(1, 0.0, 0.95, 32768))


def test_invalid_options_fail_before_vllm_starts(fake_vllm):
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMBackend("m", gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="must be >= 1"):
        VLLMBackend("m", data_parallel_size=0)
    assert fake_vllm.LLM.instances == []


def test_dp_device_groups():
    assert V.dp_device_groups(2, 1) == ["0", "1"]
    assert V.dp_device_groups(2, 2) == ["0,1", "2,3"]
    assert V.dp_device_groups(2, 2, "4,5,6,7") == ["4,5", "6,7"]
    assert V.dp_device_groups(2, 1, "3,5,7") == ["3", "5"]
    with pytest.raises(ValueError, match="needs 4 GPUs, but CUDA_VISIBLE_DEVICES lists 2"):
        V.dp_device_groups(2, 2, "0,1")


def test_data_parallel_engines_run_in_their_own_processes_on_their_own_gpus(monkeypatch):
    """dp=2 x tp=2: two spawned engines, each sees its two GPUs and its own engine seed; results come back in
    request order whichever engine ran them, and no engine holds more than its share of requests."""
    monkeypatch.syspath_prepend(str(FAKE_VLLM_DIR))  # spawned children inherit sys.path, and import the fake
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    backend = VLLMBackend("m", tensor_parallel_size=2, data_parallel_size=2, seed=1, seed_per_request=True)
    try:
        info = backend.info()
        assert info["device_groups"] == ["4,5", "6,7"] and info["engine_seeds"] == [1, 2]
        assert info["max_num_seqs"] == [8, 8] and backend.inflight(0, 2) == 5  # ceil(8 / 2) + 1
        requests = [Request([0] * (i + 1), 100 + i) for i in range(12)]
        out = backend.generate(requests, SamplingSettings(2, 0.6, 0.95, 50))
        assert [o[0].text.split("boxed")[1] for o in out] == [f"{{{i + 1}}}" for i in range(12)]
        devices = {o[0].text.split("devices=")[1].split(" ")[0] for o in out}
        assert devices <= {"4,5", "6,7"}
        assert max(int(o[0].text.split("held=")[1].split("<")[0]) for o in out) <= 5
        assert [o[1].tokens for o in out] == [1 + (100 + i + 1) % 50 for i in range(12)]
        assert sum(backend.served) == 12
        assert backend.generate([Request([9], 3)], SamplingSettings(1, 0.0, 1.0, 8))[0][0].tokens == 4
    finally:
        backend.close()
    assert backend._workers == []


def test_a_slow_data_parallel_engine_does_not_hold_up_the_others(monkeypatch):
    """Requests are dealt out on demand (one in flight per engine here): while the slow engine works on its first
    request, the fast one takes the rest, instead of waiting for a pre-assigned half."""
    monkeypatch.syspath_prepend(str(FAKE_VLLM_DIR))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("FAKE_VLLM_SLOW_DEVICES", "0")
    monkeypatch.setenv("FAKE_VLLM_STEP_DELAY", "1.0")
    backend = VLLMBackend("m", data_parallel_size=2, dp_inflight=1)
    try:
        out = backend.generate([Request([0] * (i + 1), i) for i in range(8)], SamplingSettings(1, 0.6, 1.0, 50))
        devices = [o[0].text.split("devices=")[1].split(" ")[0] for o in out]
        assert devices.count("0") <= 2 and devices.count("1") >= 6
        assert all("held=1<" in o[0].text for o in out)
        assert backend.served == [devices.count("0"), devices.count("1")]
    finally:
        backend.close()


def test_resolve_backend(monkeypatch, fake_vllm):
    assert G.resolve_backend("auto") == "vllm"  # the fake is importable
    assert G.resolve_backend("transformers") == "transformers"
    monkeypatch.delitem(sys.modules, "vllm")
    monkeypatch.setattr(G, "vllm_available", lambda: False)
    assert G.resolve_backend("auto") == "transformers"
    with pytest.raises(ValueError, match="vLLM is not installed"):
        G.resolve_backend("vllm")
    with pytest.raises(ValueError, match="unknown backend"):
        G.resolve_backend("sglang")


def model_dir(tmp_path, **config):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", **config}))
    return str(model)


def vllm_config(tmp_path, **kw):
    from dler.eval.settings import EvalConfig

    settings = dict(model=model_dir(tmp_path, max_position_embeddings=4096), output_dir=str(tmp_path / "run"),
                    benchmarks=["math500", "amc"], n=2, max_tokens=64, backend="vllm", data_dir=str(FIXTURES),
                    grader_workers=0, progress=False)  # fmt: skip
    settings.update(kw)
    return EvalConfig(**settings)


def test_eval_loop_through_the_vllm_backend(tmp_path, fake_vllm):
    """The run loop with backend="vllm": every problem of every benchmark in one submission, no per-request
    seeds by default, each problem written as it finishes (in any order), graded."""
    from dler.eval.run import evaluate

    out = evaluate(vllm_config(tmp_path), tokenizer=CharTokenizer())
    results = next(iter(out.values()))
    protocol = results["protocol"]
    assert protocol["backend"] == "vllm"
    assert protocol["backend_info"]["llm_kwargs"]["seed"] == 0
    assert protocol["resume_key"]["chunk_size"] is None and protocol["resume_key"]["seeding"] == "engine"
    assert protocol["reproducibility"]["seeding"] == "engine"
    assert protocol["reproducibility"]["per_problem_reproducible"] is False
    (llm,) = fake_vllm.LLM.instances
    (call,) = llm.calls  # math500's 3 problems and amc's 2 at once
    assert call["kind"] == "enqueue" and len(call["prompts"]) == 5
    assert all("seed" not in p for p in call["params"])
    m = results["benchmarks"]["math500"]
    assert m["grading"]["wrong"] == 6  # "\\boxed{<prompt length>}" after </think>: graded, and wrong
    lines = (tmp_path / "run" / "generations" / "math500.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["index"] for x in lines) == [0, 1, 2]


def test_seed_per_request_in_the_eval_loop(tmp_path, fake_vllm):
    from dler.eval.protocol import derive_seed
    from dler.eval.run import evaluate

    out = evaluate(vllm_config(tmp_path, seed_per_request=True), tokenizer=CharTokenizer())
    (call,) = fake_vllm.LLM.instances[0].calls
    seeds = [derive_seed(0, "math500", i) for i in range(3)] + [derive_seed(0, "amc", i) for i in range(2)]
    assert [p["seed"] for p in call["params"]] == seeds
    assert next(iter(out.values()))["protocol"]["resume_key"]["seeding"] == "request"


def test_resuming_a_run_with_another_seeding_is_refused_naming_the_flag(tmp_path, fake_vllm):
    from dler.eval.errors import ResumeError
    from dler.eval.run import evaluate

    evaluate(vllm_config(tmp_path), tokenizer=CharTokenizer())
    with pytest.raises(ResumeError, match="seeding: 'engine' there, 'request' now .*--seed-per-request"):
        evaluate(vllm_config(tmp_path, seed_per_request=True), tokenizer=CharTokenizer())


def test_reproducible_records_batch_invariance_in_the_protocol(tmp_path, fake_vllm, monkeypatch):
    from dler.eval.run import evaluate

    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")
    out = evaluate(vllm_config(tmp_path, reproducible=True), tokenizer=CharTokenizer())
    protocol = next(iter(out.values()))["protocol"]
    assert protocol["reproducibility"]["VLLM_BATCH_INVARIANT"] == "1"
    assert protocol["reproducibility"]["per_problem_reproducible"] is True
    assert protocol["sessions"][-1]["reproducibility"]["seeding"] == "request"
    assert fake_vllm.LLM.instances[0].env["VLLM_BATCH_INVARIANT"] == "1"


def test_max_model_len_is_checked_with_the_tokenizer_before_loading(tmp_path, fake_vllm):
    """The longest prompt + --max-tokens must fit --max-model-len (vLLM would cut responses silently), and the
    model's own context when --max-model-len is not given; nothing is loaded or written before the check."""
    from dler.eval.errors import EvalSettingsError
    from dler.eval.run import evaluate

    too_small = r"--max-model-len 100 is too small: the longest prompt \(math500 problem \d\) has \d+ tokens .* Use"
    with pytest.raises(EvalSettingsError, match=too_small):
        evaluate(vllm_config(tmp_path, max_model_len=100), tokenizer=CharTokenizer())
    assert fake_vllm.LLM.instances == [] and not (tmp_path / "run").exists()
    with pytest.raises(EvalSettingsError, match="the model's context length is 4096 tokens"):
        evaluate(vllm_config(tmp_path, max_tokens=4000), tokenizer=CharTokenizer())
    assert fake_vllm.LLM.instances == [] and not (tmp_path / "run").exists()
    evaluate(vllm_config(tmp_path, max_tokens=4000, max_model_len=8192), tokenizer=CharTokenizer())
    assert fake_vllm.LLM.instances[0].kwargs["max_model_len"] == 8192
