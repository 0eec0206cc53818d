"""The vLLM generation backend: the paper's, on GPUs. Seeding is described in `dler.eval.generate`.

Data parallelism with vLLM: `LLM(data_parallel_size>1)` is refused by vLLM's offline API in a single process
(since 0.11: "not supported for single-process usage and may hang"), so `data_parallel_size` here starts that many
independent engine processes, each on its own group of `tensor_parallel_size` GPUs (`CUDA_VISIBLE_DEVICES`).
Requests are dealt out on demand: each engine holds at most about as many requests as it can run at once
(`max_num_seqs` sequences, reported by the engine), and gets the next ones from the shared queue when some of its
own finish. A slow engine therefore never sits on a backlog that an idle one could have taken: once the queue is
empty, the wait is for the requests already running, not for a pre-assigned shard.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from typing import Any

from dler.eval.generate import Request, Sample, SamplingSettings
from dler.eval.vllm_engine import abort, engine_inputs, engine_process, enqueue, samples_of, step_finished

Finished = list[tuple[int, list[Sample]]]  # requests that finished: (request index, samples)


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


def check_engine_settings(
    tensor_parallel_size: int, data_parallel_size: int, gpu_memory_utilization: float, dp_inflight: int | None = None
) -> None:
    """Refuse engine settings vLLM cannot start with (`dler eval` checks them before anything loads)."""
    if tensor_parallel_size < 1 or data_parallel_size < 1:
        raise ValueError("tensor_parallel_size and data_parallel_size must be >= 1")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if dp_inflight is not None and dp_inflight < 1:
        raise ValueError(f"dp_inflight must be >= 1, got {dp_inflight}")


class VLLMBackend:
    """vLLM offline generation: `vllm.LLM(...)` once (per data-parallel engine), requests streamed through it.

    Args map to vLLM as: tensor_parallel_size -> `LLM(tensor_parallel_size=)`; data_parallel_size -> that many
    engine processes (see the module docstring); seed -> `LLM(seed=)` (engine r of a data-parallel group gets
    seed + r, so that engines do not share a random stream); seed_per_request -> each request's own seed as
    `SamplingParams(seed=)` (off by default: vLLM's fast sampling path); batch_invariant -> `VLLM_BATCH_INVARIANT=1`
    in the environment before any engine starts; max_model_len, gpu_memory_utilization, dtype, enforce_eager -> the
    `LLM` arguments of the same name (None leaves vLLM's default); llm_kwargs: any other `LLM` argument;
    dp_inflight: requests each data-parallel engine may hold (default: enough for its `max_num_seqs` sequences).
    Sampling: `SamplingParams(n, temperature, top_p, max_tokens[, seed], skip_special_tokens=False)`; temperature 0
    is vLLM's greedy decoding. Token counts are `len(output.token_ids)`; truncated = `finish_reason == "length"`.
    """

    name = "vllm"

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
        seed_per_request: bool = False,
        batch_invariant: bool = False,
        dp_inflight: int | None = None,
    ):
        check_engine_settings(tensor_parallel_size, data_parallel_size, gpu_memory_utilization, dp_inflight)
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
        self.seed_per_request = seed_per_request
        self.batch_invariant = batch_invariant
        self.dp_inflight = dp_inflight
        self._llm = None
        self._workers: list[tuple[Any, Any]] = []  # (process, connection)
        self._max_num_seqs: list[int | None] = []
        self._calls = 0
        self.served: list[int] = []  # requests each engine finished (data parallel), for the protocol
        if batch_invariant:  # read by vLLM when the engine starts; spawned engines inherit the environment
            os.environ["VLLM_BATCH_INVARIANT"] = "1"
        self._start()

    @property
    def per_request_seed(self) -> bool:
        return self.seed_per_request

    @property
    def seeding(self) -> str:
        return "request" if self.seed_per_request else "engine"

    def llm_kwargs(self, rank: int = 0) -> dict[str, Any]:
        """The arguments of `vllm.LLM` (of data-parallel engine `rank`: only the seed differs between engines)."""
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "tensor_parallel_size": self.tensor_parallel_size,
            "seed": self.seed + rank,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "dtype": self.dtype,
            "enforce_eager": self.enforce_eager,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        kwargs.update(self.extra)
        return kwargs

    @staticmethod
    def sampling_kwargs(settings: SamplingSettings, seed: int | None = None) -> dict[str, Any]:
        """The arguments of `vllm.SamplingParams` for one request (`seed` only with per-request seeding)."""
        kwargs: dict[str, Any] = {
            "n": settings.n,
            "temperature": settings.temperature,
            "top_p": 1.0 if settings.greedy else settings.top_p,
            "max_tokens": settings.max_tokens,
        }
        if seed is not None:
            kwargs["seed"] = seed
        if settings.stop:  # the prompt format's: vLLM ends the response there and leaves the string out
            kwargs["stop"] = list(settings.stop)
        kwargs["skip_special_tokens"] = False  # keep a `</think>` that a tokenizer marks special
        return kwargs

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
            for rank, devices in enumerate(groups):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=engine_process, args=(child, devices, self.llm_kwargs(rank)), daemon=False)
                proc.start()
                child.close()
                self._workers.append((proc, parent))
            for rank, (_, conn) in enumerate(self._workers):
                try:
                    status, detail = conn.recv()
                except EOFError:
                    status, detail = "error", "the engine process exited while starting"
                if status != "ready":
                    raise RuntimeError(f"vLLM data-parallel engine {rank} (GPUs {groups[rank]}) failed: {detail}")
                self._max_num_seqs.append(detail.get("max_num_seqs") if isinstance(detail, dict) else None)
        except BaseException:
            self.close()
            raise
        self.device_groups = groups
        self.served = [0] * len(self._workers)

    def inflight(self, rank: int, n: int) -> int:
        """Requests data-parallel engine `rank` may hold at once: its `max_num_seqs` sequences (vLLM's default
        when unknown: 256) at n samples per request, plus one so that it never waits for the next request."""
        if self.dp_inflight is not None:
            return self.dp_inflight
        seqs = self._max_num_seqs[rank] if rank < len(self._max_num_seqs) and self._max_num_seqs[rank] else 256
        return max(1, math.ceil(seqs / max(1, n))) + 1

    def _params(self, requests: list[Request], settings: SamplingSettings) -> list[dict]:
        return [self.sampling_kwargs(settings, r.seed if self.seed_per_request else None) for r in requests]

    def generate_stream(self, requests: list[Request], settings: SamplingSettings) -> Iterator[Finished]:
        """Submit every request at once (`LLM.enqueue`); yield [(request index, samples), ...] as requests finish
        (`LLMEngine.step`), in any order, so that the run loop writes each problem as soon as it is done.

        Closing the iterator early (an error, Ctrl-C in the consumer) aborts the requests still running."""
        if not requests:
            return
        params = self._params(requests, settings)
        if self._llm is not None:
            yield from self._stream_single(requests, params)
        else:
            yield from self._stream_dp(requests, params, settings.n)

    def _stream_single(self, requests: list[Request], params: list[dict]) -> Iterator[Finished]:
        llm = self._llm
        if not hasattr(llm, "enqueue"):  # vLLM < 0.29: one blocking call, results at the end
            outputs = llm.generate(*engine_inputs([r.prompt_ids for r in requests], params), use_tqdm=self.progress)
            if len(outputs) != len(requests):
                raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts")
            yield [(i, samples_of(o)) for i, o in enumerate(outputs)]
            return
        ids = enqueue(llm, [r.prompt_ids for r in requests], params)
        pending = dict(zip(ids, range(len(requests)), strict=True))
        try:
            while pending:
                if not llm.llm_engine.has_unfinished_requests():
                    raise RuntimeError(f"vLLM finished without outputs for {len(pending)} of the requests")
                finished = step_finished(llm, pending)
                if finished:
                    yield finished
        finally:
            if pending:
                abort(llm, list(pending))

    def _stream_dp(self, requests: list[Request], params: list[dict], n: int) -> Iterator[Finished]:
        from multiprocessing.connection import wait

        self._calls += 1
        call = self._calls  # results of an earlier, abandoned call that still arrive are ignored
        queue = deque(range(len(requests)))
        held = [0] * len(self._workers)
        conns = [conn for _, conn in self._workers]

        def refill(rank: int) -> None:
            take = min(self.inflight(rank, n) - held[rank], len(queue))
            if take > 0:
                batch = [queue.popleft() for _ in range(take)]
                conns[rank].send(("add", [((call, i), requests[i].prompt_ids, params[i]) for i in batch]))
                held[rank] += take

        remaining = len(requests)
        try:
            for rank in range(len(conns)):
                refill(rank)
            while remaining:
                busy = [conns[r] for r in range(len(conns)) if held[r]]
                if not busy:
                    raise RuntimeError(f"vLLM data-parallel engines lost {remaining} requests")
                for conn in wait(busy):
                    rank = conns.index(conn)
                    try:
                        status, payload = conn.recv()
                    except EOFError:
                        raise RuntimeError(
                            f"vLLM data-parallel engine {rank} (GPUs {self.device_groups[rank]}) exited"
                        ) from None
                    if status != "done":
                        raise RuntimeError(f"vLLM data-parallel engine {rank} failed: {payload}")
                    mine = [(i, samples) for (c, i), samples in payload if c == call]
                    held[rank] -= len(mine)
                    remaining -= len(mine)
                    self.served[rank] += len(mine)
                    refill(rank)  # before yielding: the engine gets new work while the caller grades
                    if mine:
                        yield mine
        finally:
            if remaining:
                for rank, conn in enumerate(conns):
                    if held[rank]:
                        with contextlib.suppress(OSError):  # a dead engine has nothing left to abort
                            conn.send(("abort", None))

    def generate(self, requests: list[Request], settings: SamplingSettings) -> list[list[Sample]]:
        results: list[list[Sample] | None] = [None] * len(requests)
        for batch in self.generate_stream(requests, settings):
            for i, samples in batch:
                results[i] = samples
        if None in results:
            raise RuntimeError(f"vLLM returned no output for {results.count(None)} of {len(requests)} prompts")
        return results  # type: ignore[return-value]

    def reproducibility(self) -> dict[str, Any]:
        """What the samples' reproducibility rests on (recorded in the protocol)."""
        return {
            "seeding": self.seeding,
            "engine_seeds": [self.seed + r for r in range(self.data_parallel_size)],
            "VLLM_BATCH_INVARIANT": os.environ.get("VLLM_BATCH_INVARIANT"),
            "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"),
            "per_problem_reproducible": self.seed_per_request and os.environ.get("VLLM_BATCH_INVARIANT") == "1",
        }

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": self.name,
            "llm_kwargs": self.llm_kwargs(),
            "data_parallel_size": self.data_parallel_size,
            "reproducibility": self.reproducibility(),
        }
        if self._workers or self.served:
            info["device_groups"] = getattr(self, "device_groups", None)
            info["engine_seeds"] = [self.seed + r for r in range(self.data_parallel_size)]
            info["max_num_seqs"] = self._max_num_seqs
            info["requests_served"] = list(self.served)
        return info

    def close(self) -> None:
        for _, conn in self._workers:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc, conn in self._workers:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
            conn.close()
        self._workers = []
        self._llm = None
