"""What runs beside one vLLM engine: request plumbing shared by the in-process engine and the data-parallel ones,
and the loop of a data-parallel engine process (`engine_process`). The parent side is `dler.eval.vllm_backend`."""

from __future__ import annotations

import logging
import os
from typing import Any

from dler.eval.generate import Sample

logger = logging.getLogger(__name__)


def samples_of(output) -> list[Sample]:
    """The samples of one finished vLLM request (`RequestOutput`)."""
    reasons = [str(o.finish_reason) if o.finish_reason is not None else "unknown" for o in output.outputs]
    return [Sample(o.text, len(o.token_ids), r == "length", r) for o, r in zip(output.outputs, reasons, strict=True)]


def engine_inputs(prompt_ids: list[list[int]], param_kwargs: list[dict]) -> tuple[list[dict], list]:
    """vLLM's arguments for these requests: token prompts and their `SamplingParams`."""
    from vllm import SamplingParams

    return [{"prompt_token_ids": list(ids)} for ids in prompt_ids], [SamplingParams(**kw) for kw in param_kwargs]


def enqueue(llm, prompt_ids: list[list[int]], param_kwargs: list[dict]) -> list[str]:
    """Add requests to a vLLM engine without running it (`LLM.enqueue`, vLLM >= 0.29); their request ids."""
    return list(llm.enqueue(*engine_inputs(prompt_ids, param_kwargs), use_tqdm=False))


def step_finished(llm, pending: dict[str, Any]) -> list[tuple[Any, list[Sample]]]:
    """One engine step; (our key, samples) of the pending requests it finished."""
    finished = []
    for output in llm.llm_engine.step():
        if getattr(output, "finished", True) and output.request_id in pending:
            finished.append((pending.pop(output.request_id), samples_of(output)))
    return finished


def abort(llm, request_ids: list[str]) -> None:
    try:
        llm.llm_engine.abort_request(request_ids)
    except Exception as exc:  # the engine may already be gone (Ctrl-C reaches its processes too)
        logger.debug("could not abort %d vLLM requests: %s", len(request_ids), exc)


def max_num_seqs(llm) -> int | None:
    try:
        return int(llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
    except (AttributeError, TypeError, ValueError):
        return None


def engine_process(conn, devices: str, llm_kwargs: dict) -> None:
    """One data-parallel vLLM engine in its own process, on its own GPUs. Messages in: ("add", [(key, prompt_ids,
    sampling kwargs), ...]), ("abort", None), None (stop). Out: ("ready", {"max_num_seqs": ...}), ("done", [(key,
    samples), ...]) as requests finish, ("error", text). It steps whenever it holds requests, else waits."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    try:
        from vllm import LLM

        llm = LLM(**llm_kwargs)
        conn.send(("ready", {"max_num_seqs": max_num_seqs(llm)}))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports it
        return
    except BaseException as exc:  # report start-up failures to the parent instead of hanging it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    pending: dict[str, Any] = {}
    try:
        while True:
            while not pending or conn.poll():
                message = conn.recv()
                if message is None:
                    return
                kind, payload = message
                if kind == "abort":
                    if pending:
                        abort(llm, list(pending))
                    pending.clear()
                elif kind == "add":
                    try:
                        ids = enqueue(llm, [ids for _, ids, _ in payload], [kw for _, _, kw in payload])
                    except Exception as exc:  # e.g. a prompt longer than max_model_len
                        conn.send(("error", f"{type(exc).__name__}: {exc}"))
                        continue
                    pending.update(zip(ids, [key for key, _, _ in payload], strict=True))
            if not pending:
                continue
            try:
                finished = step_finished(llm, pending)
            except Exception as exc:
                abort(llm, list(pending))
                pending.clear()
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
                continue
            if finished:
                conn.send(("done", finished))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return
