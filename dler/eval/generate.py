"""Generation backends: vLLM on GPUs (the paper's), transformers anywhere (the fallback the tests use).

Both take tokenised chat prompts and return, per prompt, n `Sample`s with the response text, its length in tokens
(EOS included) and whether it was cut off by the generation cap. Neither imports torch or vLLM at module import.

Seeds. Every request carries its own seed, derived from the run's seed, the benchmark and the problem index, so
a problem's samples do not depend on what else was generated with it:

- vLLM takes one `SamplingParams(seed=...)` per request: results are reproducible per problem;
- transformers `generate` has one random stream per call: the call is seeded with its first request's seed, and
  the run loop always calls it on the same fixed groups of problems (`chunk_size`), so reruns and resumed runs
  produce the same samples for the same chunk size.

Data parallelism with vLLM: `LLM(data_parallel_size>1)` is refused by vLLM's offline API in a single process
(since 0.11: "not supported for single-process usage and may hang"), so `data_parallel_size` here starts that many
independent engine processes, each on its own group of `tensor_parallel_size` GPUs (`CUDA_VISIBLE_DEVICES`), and
splits each chunk of prompts between them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import asdict, dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "vllm", "transformers")


@dataclass(frozen=True)
class SamplingSettings:
    """What is sampled: n samples per prompt at this temperature / top_p, at most max_tokens new tokens each."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n (samples per problem) must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Request:
    """One prompt to sample: its token ids (chat template applied) and its seed."""

    prompt_ids: list[int]
    seed: int


@dataclass(frozen=True)
class Sample:
    """One response: text, length in tokens (EOS included), cut off by the cap?, and the backend's reason."""

    text: str
    tokens: int
    truncated: bool
    finish_reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(Protocol):
    name: str
    per_request_seed: bool  # True: a request's samples do not depend on the other requests of the call

    def generate(self, requests: list[Request], settings: SamplingSettings) -> list[list[Sample]]: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def resolve_backend(name: str) -> str:
    """ "auto" -> "vllm" when vLLM is installed, else "transformers"; a named backend is checked."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "vllm" if vllm_available() else "transformers"
    if name == "vllm" and not vllm_available():
        raise ValueError(
            "--backend vllm: vLLM is not installed (GPU only: pip install -e '.[vllm]'); "
            "use --backend transformers to evaluate without it"
        )
    return name


# --------------------------------------------------------------------------------------------- transformers


class TransformersBackend:
    """Batched `model.generate` with left padding: sampling at temperature/top_p (top_k off), greedy at 0.

    `model` is a path or hub id (or an already loaded model, with `tokenizer`). Runs on CUDA when available,
    else on CPU; `dtype="auto"` is bfloat16 on GPU and float32 on CPU.
    """

    name = "transformers"
    per_request_seed = False

    def __init__(self, model, tokenizer=None, dtype: str = "auto", device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        if isinstance(model, str):
            self.model_name = model
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
        else:
            self.model_name = getattr(model, "name_or_path", type(model).__name__)
            if tokenizer is None:
                raise ValueError("pass the tokenizer with an already loaded model")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.dtype = str(torch_dtype).replace("torch.", "")
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
            eos.append(tokenizer.eos_token_id)
        if not eos:
            raise ValueError("the model and tokenizer define no EOS token: responses could never finish")
        self.eos_ids = eos
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        self.pad_id = pad

    def generation_config(self, settings: SamplingSettings):
        from transformers import GenerationConfig

        common = dict(
            max_new_tokens=settings.max_tokens,
            num_return_sequences=settings.n,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        if settings.greedy:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(
            do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0, **common
        )

    def generate(self, requests: list[Request], settings: SamplingSettings) -> list[list[Sample]]:
        import torch

        if not requests:
            return []
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for i, r in enumerate(requests):  # left padding
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - len(r.prompt_ids) :] = 1
        torch.manual_seed(requests[0].seed)
        if self.device.startswith("cuda"):
            torch.cuda.manual_seed_all(requests[0].seed)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=self.generation_config(settings),
            )
        completions = out[:, width:].tolist()
        eos = set(self.eos_ids)
        results: list[list[Sample]] = []
        for i in range(len(requests)):
            samples = []
            for row in completions[i * settings.n : (i + 1) * settings.n]:
                stop = next((j for j, t in enumerate(row) if t in eos), None)
                body = row if stop is None else row[:stop]
                text = self.tokenizer.decode(body, skip_special_tokens=False)
                if stop is None:
                    samples.append(Sample(text, len(row), True, "length"))
                else:
                    samples.append(Sample(text, stop + 1, False, "stop"))
            results.append(samples)
        return results

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "dtype": self.dtype, "eos_token_ids": self.eos_ids}

    def close(self) -> None:
        self.model = None


# --------------------------------------------------------------------------------------------- vLLM


def dp_device_groups(data_parallel_size: int, tensor_parallel_size: int, visible: str | None = None) -> list[str]:
    """`CUDA_VISIBLE_DEVICES` of each data-parallel engine: consecutive groups of `tensor_parallel_size` GPUs
    among the visible ones (`visible`: the parent's CUDA_VISIBLE_DEVICES; None = GPUs 0..dp*tp-1)."""
    need = data_parallel_size * tensor_parallel_size
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(need)]
    if len(devices) < need:
        raise ValueError(
            f"data_parallel_size {data_parallel_size} x tensor_parallel_size {tensor_parallel_size} needs {need} "
            f"GPUs, but CUDA_VISIBLE_DEVICES lists {len(devices)}: {visible}"
        )
    tp = tensor_parallel_size
    return [",".join(devices[r * tp : (r + 1) * tp]) for r in range(data_parallel_size)]


def split_evenly(items: list, parts: int) -> list[list]:
    """Contiguous, balanced shards (sizes differ by at most one); empty shards when there are few items."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + q + (1 if p < r else 0)
        out.append(items[start:end])
        start = end
    return out


def _samples_from_request_output(output) -> list[Sample]:
    samples = []
    for o in output.outputs:
        reason = str(o.finish_reason) if o.finish_reason is not None else "unknown"
        samples.append(Sample(o.text, len(o.token_ids), reason == "length", reason))
    return samples


def _vllm_generate(llm, requests: list[Request], param_kwargs: list[dict], use_tqdm: bool) -> list[list[Sample]]:
    from vllm import SamplingParams

    prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
    params = [SamplingParams(**kw) for kw in param_kwargs]
    outputs = llm.generate(prompts, params, use_tqdm=use_tqdm)
    if len(outputs) != len(requests):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts")
    return [_samples_from_request_output(o) for o in outputs]


def _dp_worker(conn, devices: str, llm_kwargs: dict) -> None:
    """One data-parallel vLLM engine in its own process, on its own GPUs; serves chunks until told to stop."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    try:
        from vllm import LLM

        llm = LLM(**llm_kwargs)
        conn.send(("ready", None))
    except BaseException as exc:  # report start-up failures to the parent instead of hanging it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        message = conn.recv()
        if message is None:
            break
        requests, param_kwargs = message
        try:
            conn.send(("ok", _vllm_generate(llm, requests, param_kwargs, use_tqdm=False)))
        except BaseException as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class VLLMBackend:
    """vLLM offline generation: `vllm.LLM(...)` once, `SamplingParams` per request (with its seed).

    Args map to vLLM as: tensor_parallel_size -> `LLM(tensor_parallel_size=)`; data_parallel_size -> that many
    engine processes (see the module docstring); seed -> `LLM(seed=)`, and each request's own seed ->
    `SamplingParams(seed=)`; max_model_len, gpu_memory_utilization, dtype, enforce_eager -> the `LLM` arguments of
    the same name (None leaves vLLM's default); llm_kwargs: any other `LLM` argument.
    Sampling: `SamplingParams(n, temperature, top_p, max_tokens, seed, skip_special_tokens=False)`; temperature 0
    is vLLM's greedy decoding. Token counts are `len(output.token_ids)`; truncated = `finish_reason == "length"`.
    """

    name = "vllm"
    per_request_seed = True

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        seed: int = 0,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        enforce_eager: bool = False,
        llm_kwargs: dict[str, Any] | None = None,
        progress: bool = True,
    ):
        if tensor_parallel_size < 1 or data_parallel_size < 1:
            raise ValueError("tensor_parallel_size and data_parallel_size must be >= 1")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        self.model_name = model
        self.tensor_parallel_size = tensor_parallel_size
        self.data_parallel_size = data_parallel_size
        self.seed = seed
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.dtype = dtype
        self.enforce_eager = enforce_eager
        self.extra = dict(llm_kwargs or {})
        self.progress = progress
        self._llm = None
        self._workers: list[tuple[Any, Any]] = []  # (process, connection)
        self._start()

    def llm_kwargs(self) -> dict[str, Any]:
        """The arguments of `vllm.LLM` (per engine: every data-parallel engine gets the same ones)."""
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "tensor_parallel_size": self.tensor_parallel_size,
            "seed": self.seed,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "dtype": self.dtype,
            "enforce_eager": self.enforce_eager,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        kwargs.update(self.extra)
        return kwargs

    @staticmethod
    def sampling_kwargs(settings: SamplingSettings, seed: int) -> dict[str, Any]:
        """The arguments of `vllm.SamplingParams` for one request."""
        return {
            "n": settings.n,
            "temperature": settings.temperature,
            "top_p": 1.0 if settings.greedy else settings.top_p,
            "max_tokens": settings.max_tokens,
            "seed": seed,
            "skip_special_tokens": False,  # keep a `</think>` that a tokenizer marks special
        }

    def _start(self) -> None:
        if self.data_parallel_size == 1:
            from vllm import LLM

            self._llm = LLM(**self.llm_kwargs())
            return
        groups = dp_device_groups(
            self.data_parallel_size, self.tensor_parallel_size, os.environ.get("CUDA_VISIBLE_DEVICES")
        )
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA state
        try:
            for devices in groups:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_dp_worker, args=(child, devices, self.llm_kwargs()), daemon=False)
                proc.start()
                child.close()
                self._workers.append((proc, parent))
            for rank, (_, conn) in enumerate(self._workers):
                status, detail = conn.recv()
                if status != "ready":
                    raise RuntimeError(f"vLLM data-parallel engine {rank} (GPUs {groups[rank]}) failed: {detail}")
        except BaseException:
            self.close()
            raise
        self.device_groups = groups

    def generate(self, requests: list[Request], settings: SamplingSettings) -> list[list[Sample]]:
        if not requests:
            return []
        param_kwargs = [self.sampling_kwargs(settings, r.seed) for r in requests]
        if self._llm is not None:
            return _vllm_generate(self._llm, requests, param_kwargs, use_tqdm=self.progress)
        shards = split_evenly(list(range(len(requests))), len(self._workers))
        busy = []
        for (_, conn), shard in zip(self._workers, shards, strict=True):
            if shard:
                conn.send(([requests[i] for i in shard], [param_kwargs[i] for i in shard]))
                busy.append((conn, shard))
        results: list[list[Sample] | None] = [None] * len(requests)
        errors = []
        for conn, shard in busy:  # collect every shard, even after an error, so no engine is left mid-reply
            status, payload = conn.recv()
            if status != "ok":
                errors.append(payload)
                continue
            for i, samples in zip(shard, payload, strict=True):
                results[i] = samples
        if errors:
            raise RuntimeError(f"vLLM data-parallel generation failed: {errors}")
        return results  # type: ignore[return-value]

    def info(self) -> dict[str, Any]:
        info = {"backend": self.name, "llm_kwargs": self.llm_kwargs(), "data_parallel_size": self.data_parallel_size}
        if self._workers:
            info["device_groups"] = getattr(self, "device_groups", None)
        return info

    def close(self) -> None:
        for _, conn in self._workers:
            try:
                conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for proc, conn in self._workers:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
            conn.close()
        self._workers = []
        self._llm = None
