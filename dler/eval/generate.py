"""Generation backends: vLLM on GPUs (the paper's, `dler.eval.vllm_backend`), transformers anywhere (here).

Both take tokenised chat prompts and return, per prompt, n `Sample`s with the response text, its length in tokens
(EOS included) and whether it was cut off by the generation cap. Neither imports torch or vLLM at module import.

Seeding (`Backend.seeding`, recorded in the protocol and part of a run's resume key):

- "engine" (vLLM's default here): one `LLM(seed=...)` per engine and no per-request seed. vLLM samples every
  request of a batch with one random draw (`q.exponential_()` over the batch, then FlashInfer's top-p kernel
  where available), which is its fast path. Runs are statistically equivalent but not sample-for-sample
  reproducible: a request's noise depends on what it was batched with.
- "request" (`--seed-per-request`, implied by `--reproducible`): `SamplingParams(seed=...)` per problem, derived
  from the run's seed, the benchmark and the problem index (vLLM gives child i of an n-sample request seed + i).
  vLLM then keeps one `torch.Generator` per request and, in vLLM 0.29, leaves FlashInfer's sampler for the
  PyTorch one and draws each seeded request's noise in a Python loop over the batch
  (`vllm/v1/sample/ops/topk_topp_sampler.py`: `forward_cuda` falls back to `forward_native` "when per-request
  generators are present"; `random_sample` handles them "one by one"): slower at large batches. Per-problem
  samples are bit-reproducible only with batch-invariant kernels as well (`VLLM_BATCH_INVARIANT=1`, which
  `--reproducible` sets), on the same GPU type and vLLM version.
- "call" (transformers): `generate` has one random stream per call, seeded with its first request's seed; the run
  loop always calls it on the same fixed groups of problems (`chunk_size`), so reruns and resumed runs produce the
  same samples for the same chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from dler.prompts import cut_at_stop

BACKENDS = ("auto", "vllm", "transformers")


@dataclass(frozen=True)
class SamplingSettings:
    """What is sampled: n samples per prompt at this temperature / top_p, at most max_tokens new tokens each, a
    response ending early at the first of the `stop` strings (the prompt format's; cut from the text)."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...] = ()

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


class Backend(Protocol):
    name: str
    per_request_seed: bool  # True: a request's samples do not depend on the other requests of the call
    # optional: "request", "call" or "engine" (see the module docstring); None/absent: from per_request_seed

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
    seeding = "call"

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
        if settings.stop:
            common["stop_strings"] = list(settings.stop)
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
                **({"tokenizer": self.tokenizer} if settings.stop else {}),  # stop_strings need it
            )
        completions = out[:, width:].tolist()
        return [
            [self._sample(row, settings.stop) for row in completions[i * settings.n : (i + 1) * settings.n]]
            for i in range(len(requests))
        ]

    def _sample(self, row: list[int], stop_strings: tuple[str, ...]) -> Sample:
        """One response from its generated ids: up to the first EOS (counted), or cut before the first stop string
        (counted up to the token that completes it), else truncated at the cap."""
        eos = set(self.eos_ids)
        stop = next((j for j, t in enumerate(row) if t in eos), None)
        body = row if stop is None else row[:stop]
        text = self.tokenizer.decode(body, skip_special_tokens=False)
        cut = cut_at_stop(text, stop_strings)
        if cut is not None:
            return Sample(cut, _tokens_until_stop(self.tokenizer, body, stop_strings), False, "stop")
        if stop is None:
            return Sample(text, len(row), True, "length")
        return Sample(text, stop + 1, False, "stop")

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "dtype": self.dtype, "eos_token_ids": self.eos_ids}

    def close(self) -> None:
        self.model = None


def _tokens_until_stop(tokenizer, ids: list[int], stop_strings: tuple[str, ...]) -> int:
    """The fewest leading tokens of `ids` whose text holds a stop string (binary search: a longer prefix decodes
    to a longer text)."""
    low, high = 1, len(ids)
    while low < high:
        mid = (low + high) // 2
        if cut_at_stop(tokenizer.decode(ids[:mid], skip_special_tokens=False), stop_strings) is None:
            low = mid + 1
        else:
            high = mid
    return high
