"""Checks made before anything is written or any model is loaded, with the tokenizer only: the prompt lengths
against the context, and a warning with a rough duration when `--backend auto` falls back to the CPU. (The model
path or hub id is checked by `dler.eval.model_id`.)"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dler.eval.errors import EvalSettingsError

if TYPE_CHECKING:
    from collections.abc import Callable

    from dler.eval.benchmarks import LoadedBenchmark

logger = logging.getLogger(__name__)

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                 "max_sequence_length", "max_seq_length", "seq_len")  # fmt: skip


def _model_config(model: str) -> dict[str, Any] | None:
    """The model's config.json as a dict (a local folder, or the hub cache); None when it cannot be read."""
    path = Path(model).expanduser()
    try:
        if path.is_dir():
            return json.loads((path / "config.json").read_text())
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model).to_dict()
    except Exception as exc:
        logger.debug("cannot read the config of %s: %s", model, exc)
        return None


def model_context_length(config: dict[str, Any] | None) -> int | None:
    """The context length vLLM derives from a model config when `--max-model-len` is not given (the smallest of
    the usual keys, scaled by a rope scaling factor as vLLM does); None when the config names none."""
    if not config:
        return None
    config = config.get("text_config") or config
    values = [config[k] for k in _CONTEXT_KEYS if isinstance(config.get(k), int) and config[k] > 0]
    if not values:
        return None
    length = min(values)
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if isinstance(rope, dict):
        kind = rope.get("rope_type") or rope.get("type")
        factor = rope.get("factor")
        if kind not in (None, "default", "su", "longrope", "llama3", "mrope") and isinstance(factor, (int, float)):
            if kind == "yarn" and isinstance(rope.get("original_max_position_embeddings"), int):
                length = rope["original_max_position_embeddings"]
            length = int(length * factor)
    return length


def _param_count(config: dict[str, Any] | None) -> float | None:
    """Rough parameter count of a decoder-only transformer from its config (for time estimates)."""
    if not config:
        return None
    config = config.get("text_config") or config
    try:
        h, layers, vocab = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    inter = int(config.get("intermediate_size") or 4 * h)
    heads = int(config.get("num_attention_heads") or 1)
    kv = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or h // heads)
    attention = 2 * h * heads * head_dim + 2 * h * kv * head_dim
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings") else 2)
    return float(layers * (attention + 3 * h * inter) + embeddings)


def _check_context(config, backend, longest: tuple[int, str]) -> None:
    """The longest prompt plus --max-tokens must fit the context: vLLM stops a sequence at max_model_len and
    reports it as finish_reason "length", exactly like the --max-tokens cap, so a short context would silently
    change the protocol. Checked with the tokenizer only, before the model is loaded."""
    tokens, where = longest
    max_tokens = config.max_tokens
    need = tokens + max_tokens
    if (getattr(backend, "name", config.backend) if backend is not None else config.backend) == "vllm":
        limit = getattr(backend, "max_model_len", None) if backend is not None else config.max_model_len
        if limit is not None:
            if need > limit:
                raise EvalSettingsError(
                    f"--max-model-len {limit} is too small: the longest prompt ({where}) has {tokens} tokens and "
                    f"--max-tokens is {max_tokens}, so vLLM would stop such responses after {max(limit - tokens, 0)} "
                    f"tokens and report them as finish_reason 'length', like the --max-tokens cap. Use "
                    f"--max-model-len {need} or more, or a smaller --max-tokens."
                )
            return
        if backend is not None:
            return
        context = model_context_length(_model_config(config.model))
        if context is not None and need > context:
            raise EvalSettingsError(
                f"the model's context length is {context} tokens (its config.json), but the longest prompt ({where}) "
                f"has {tokens} tokens and --max-tokens is {max_tokens}: vLLM would stop such responses after "
                f"{max(context - tokens, 0)} tokens and report them as truncated. Lower --max-tokens, or pass "
                f"--max-model-len {need} if the model supports that length (vLLM checks it against the config)."
            )
    elif backend is None:
        context = model_context_length(_model_config(config.model))
        if context is not None and need > context:
            logger.warning(
                "the longest prompt (%s) has %d tokens and --max-tokens is %d: %d tokens in all, beyond the model's "
                "context length of %d (config.json); responses that long will degrade",
                where, tokens, max_tokens, need, context,
            )  # fmt: skip


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{max(1, round(hours * 60))} minutes"
    if hours < 48:
        return f"{hours:.0f} hours"
    return f"{hours / 24:,.0f} days"


def cpu_tokens_per_second(params: float, sequences: int, cores: int | None = None) -> float:
    """A rough decoding rate of a float32 model on CPU cores: each step reads every weight (~20 GB/s) and does
    2 x params FLOPs per sequence (~25 GFLOP/s per core), whichever is slower; `sequences` decode together."""
    cores = cores or os.cpu_count() or 1
    step = max(4 * params / 20e9, 2 * params * sequences / (25e9 * cores))
    return sequences / step


def _warn_cpu_fallback(config, backend, samples: int, sequences: int) -> None:
    """--backend auto without vLLM and CUDA means transformers on the CPU: say so, and roughly for how long."""
    if backend is not None or not config.auto_backend or config.backend != "transformers" or _cuda_available():
        return
    params = _param_count(_model_config(config.model))
    assumed = params is None
    params = params or 1.5e9
    rate = cpu_tokens_per_second(params, sequences)
    hours = samples * config.max_tokens / rate / 3600
    if config.max_tokens <= 4096 and hours < 1:
        return
    logger.warning(
        "--backend auto: vLLM is not installed and there is no CUDA GPU, so this falls back to transformers on the "
        "CPU: %s samples of up to %s tokens each. At a rough %.0f tokens/s (a %s%.2gB-parameter model in float32 on "
        "%d CPU cores, %d sequences at a time) that is up to about %s, if every response runs to --max-tokens. For "
        "the paper's protocol run on a GPU with vLLM (pip install -e '.[vllm]'); for a smoke test lower "
        "--max-tokens, --n or --limit; pass --backend transformers to run on the CPU without this warning.",
        f"{samples:,}", f"{config.max_tokens:,}", rate, "(assumed) " if assumed else "", params / 1e9,
        os.cpu_count() or 1, sequences, _duration(hours),
    )  # fmt: skip


def preflight(
    config,
    backend,
    prompt_ids: Callable[[LoadedBenchmark, Any], list[int]],
    benches: list[LoadedBenchmark],
    samples: int,
    sequences: int,
) -> None:
    """The checks that need the tokenizer (`prompt_ids`), not the model: prompt lengths against the context, and
    the CPU fallback warning for `samples` samples decoded `sequences` at a time. `backend`: one passed in, or None
    (the run builds its own)."""
    longest = (0, "")
    for lb in benches:
        for p in lb.problems:
            tokens = len(prompt_ids(lb, p))
            if tokens > longest[0]:
                longest = (tokens, f"{lb.benchmark.name} problem {p.index}")
    _check_context(config, backend, longest)
    _warn_cpu_fallback(config, backend, samples, sequences)
