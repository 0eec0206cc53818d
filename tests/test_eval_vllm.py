"""The vLLM backend's argument mapping and output handling, against a fake `vllm` module (vLLM needs a GPU)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))

from eval_fakes import FAKE_VLLM_DIR, CharTokenizer, load_fake_vllm  # noqa: E402

from dler.eval import generate as G  # noqa: E402
from dler.eval.generate import Request, SamplingSettings, VLLMBackend  # noqa: E402

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


def test_sampling_params_per_request_and_outputs(fake_vllm):
    backend = VLLMBackend("m", progress=False)
    settings = SamplingSettings(n=3, temperature=0.6, top_p=0.95, max_tokens=5)
    out = backend.generate([Request([1, 2, 3], 11), Request([4, 5], 12)], settings)
    (call,) = fake_vllm.LLM.instances[0].calls
    assert call["prompts"] == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4, 5]}]
    assert call["params"] == [
        {"n": 3, "temperature": 0.6, "top_p": 0.95, "max_tokens": 5, "seed": 11, "skip_special_tokens": False},
        {"n": 3, "temperature": 0.6, "top_p": 0.95, "max_tokens": 5, "seed": 12, "skip_special_tokens": False},
    ]
    assert call["use_tqdm"] is False
    # fake lengths: 1 + (seed + j) % max_tokens; finish_reason "length" at the cap
    assert [s.tokens for s in out[0]] == [2, 3, 4] and [s.tokens for s in out[1]] == [3, 4, 5]
    assert [s.truncated for s in out[1]] == [False, False, True]
    assert out[1][2].finish_reason == "length" and out[0][0].finish_reason == "stop"
    assert out[0][0].text.endswith("\\boxed{3}")


def test_greedy_maps_to_temperature_zero_and_top_p_one(fake_vllm):
    kwargs = VLLMBackend.sampling_kwargs(SamplingSettings(1, 0.0, 0.95, 32768), seed=5)
    assert kwargs == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 32768, "seed": 5,
                      "skip_special_tokens": False}  # fmt: skip


def test_invalid_options_fail_before_vllm_starts(fake_vllm):
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMBackend("m", gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="must be >= 1"):
        VLLMBackend("m", data_parallel_size=0)
    assert fake_vllm.LLM.instances == []


def test_dp_device_groups_and_shards():
    assert G.dp_device_groups(2, 1) == ["0", "1"]
    assert G.dp_device_groups(2, 2) == ["0,1", "2,3"]
    assert G.dp_device_groups(2, 2, "4,5,6,7") == ["4,5", "6,7"]
    assert G.dp_device_groups(2, 1, "3,5,7") == ["3", "5"]
    with pytest.raises(ValueError, match="needs 4 GPUs, but CUDA_VISIBLE_DEVICES lists 2"):
        G.dp_device_groups(2, 2, "0,1")
    assert G.split_evenly(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert G.split_evenly([1], 3) == [[1], [], []]


def test_data_parallel_engines_run_in_their_own_processes_on_their_own_gpus(monkeypatch):
    """dp=2 x tp=2: two spawned engines, each sees its two GPUs; the shards come back in order."""
    monkeypatch.syspath_prepend(str(FAKE_VLLM_DIR))  # spawned children inherit sys.path, and import the fake
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    backend = VLLMBackend("m", tensor_parallel_size=2, data_parallel_size=2, seed=1)
    try:
        assert backend.info()["device_groups"] == ["4,5", "6,7"]
        requests = [Request([0] * (i + 1), 100 + i) for i in range(5)]
        out = backend.generate(requests, SamplingSettings(2, 0.6, 0.95, 50))
        assert [o[0].text.split("boxed")[1] for o in out] == ["{1}", "{2}", "{3}", "{4}", "{5}"]
        devices = [o[0].text.split("devices=")[1].split(" ")[0] for o in out]
        assert devices == ["4,5", "4,5", "4,5", "6,7", "6,7"]
        assert [o[1].tokens for o in out] == [1 + (100 + i + 1) % 50 for i in range(5)]
        assert backend.generate([Request([9], 3)], SamplingSettings(1, 0.0, 1.0, 8))[0][0].tokens == 4
    finally:
        backend.close()
    assert backend._workers == []


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


def test_eval_loop_through_the_vllm_backend(tmp_path, fake_vllm):
    """The run loop with backend="vllm": chunks go to LLM.generate with per-problem seeds; answers are graded."""
    from dler.eval.run import EvalConfig, derive_seed, evaluate

    cfg = EvalConfig(model="m", output_dir=str(tmp_path / "run"), benchmarks=["math500", "amc"], n=2,
                     max_tokens=64, backend="vllm", data_dir=str(FIXTURES), grader_workers=0, progress=False,
                     tensor_parallel_size=1)  # fmt: skip
    out = evaluate(cfg, tokenizer=CharTokenizer())
    results = next(iter(out.values()))
    assert results["protocol"]["backend"] == "vllm"
    assert results["protocol"]["backend_info"]["llm_kwargs"]["seed"] == 0
    assert results["protocol"]["resume_key"]["chunk_size"] is None  # vLLM seeds per problem
    (llm,) = fake_vllm.LLM.instances
    assert len(llm.calls) == 2  # one chunk per benchmark (default chunk: 256 problems)
    assert [p["seed"] for p in llm.calls[0]["params"]] == [derive_seed(0, "math500", i) for i in range(3)]
    m = results["benchmarks"]["math500"]
    assert m["grading"]["wrong"] == 6  # "\boxed{<prompt length>}" after </think>: graded, and wrong
