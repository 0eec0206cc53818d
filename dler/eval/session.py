"""What both evaluation modes start from: the settings resolved, the benchmarks loaded, the tokenizer, backend and
grader built only when some problem still needs generating, progress counted, and Ctrl-C turned into
`EvalInterrupted` (what was written is kept; the same command resumes)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dler.eval.benchmarks import LoadedBenchmark, Problem, load_benchmark, parse_benchmarks, prompt_ids
from dler.eval.errors import EvalInterrupted, EvalSettingsError
from dler.eval.generate import Backend
from dler.eval.model_id import hub_offline
from dler.eval.preflight import preflight
from dler.eval.settings import EvalConfig, seeding
from dler.eval.store import Generations
from dler.prompts import ANSWER_REGIONS, PromptError, render

logger = logging.getLogger(__name__)


class _CtrlC:
    """Problems written out of those asked for (for the Ctrl-C message; total None until the plan is known), and
    whether SIGINT arrived: Ctrl-C reaches vLLM's engine processes too, and the error their exit causes here may
    surface before (or instead of) the KeyboardInterrupt."""

    def __init__(self):
        self.done = 0
        self.total: int | None = None
        self.sigint = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame):
        self.sigint = True
        signal.default_int_handler(signum, frame)

    def __exit__(self, kind, exc, tb):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if kind is not None and (issubclass(kind, KeyboardInterrupt) or (self.sigint and issubclass(kind, Exception))):
            if not isinstance(exc, EvalInterrupted):
                raise EvalInterrupted(self.done if self.total is not None else None, self.total) from None
        return False


def _actual(config: EvalConfig, backend, grader) -> EvalConfig:
    """The config as run: the backend and grader actually used (recorded and resume-checked), and the
    environment vLLM reads set before any engine starts."""
    if backend is not None:
        config = replace(config, backend=getattr(backend, "name", config.backend))
    if grader is not None:
        config = replace(config, grader=getattr(grader, "grader", config.grader))
        region = getattr(grader, "answer_region", config.answer_region)
        if region not in ANSWER_REGIONS:
            raise EvalSettingsError(
                f"the grader passed in reads the answer {region!r}; dler eval grades {' or '.join(ANSWER_REGIONS)} "
                "(MathReward(answer_region=...))"
            )
        config = replace(config, answer_region=region)  # what grades is what is recorded
    if config.data_dir is None and hub_offline():
        logger.warning("HF_HUB_OFFLINE=1 and no --data-dir: the benchmarks must already be in the datasets cache")
    if config.reproducible and config.backend == "vllm":
        os.environ["VLLM_BATCH_INVARIANT"] = "1"  # before any engine starts (and recorded in the protocol)
    elif config.reproducible or config.seed_per_request:
        logger.info("--reproducible / --seed-per-request apply to vLLM; %s seeds its own way", config.backend)
    return config


class Session:
    """One evaluation call, used as a context manager. `backend`, `tokenizer` and `grader` passed in are used
    (and left open) instead of the ones built from the config; `on_problem(benchmark, index)` is called after
    each problem's line is written."""

    def __init__(self, config: EvalConfig, backend: Backend | None, tokenizer, grader, on_problem=None):
        self._args = (config, backend, grader)
        self._backend, self._tokenizer, self._grader = backend, tokenizer, grader
        self._own_backend, self._own_grader = backend is None, grader is None
        self._prompts: dict[tuple[str, int], str] = {}
        self._prompt_ids: dict[tuple[str, int], list[int]] = {}
        self.on_problem: Callable[[str, int], None] | None = on_problem

    def __enter__(self) -> Session:
        with contextlib.ExitStack() as stack:
            self.counter = stack.enter_context(_CtrlC())
            given, backend, grader = self._args
            config = self.config = _actual(given.validate(check_model=backend is None), backend, grader)
            self.prompt = config.prompt()
            # golds are checked by the grader passed in (its workers), else in this process by the configured grader
            gold_grader = grader if hasattr(grader, "check_answers") else config.grader
            benchmarks = parse_benchmarks(config.benchmarks)
            self.loaded = [load_benchmark(b, config.data_dir, config.limit, grader=gold_grader) for b in benchmarks]
            self.seeding = seeding(config, backend)
            stack.callback(self.close)
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc):
        return self._exit.__exit__(*exc)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self._backend is not None and getattr(self._backend, "tokenizer", None) is not None:
                self._tokenizer = self._backend.tokenizer
            else:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        return self._tokenizer

    def text_of(self, lb: LoadedBenchmark, p: Problem) -> str:
        """The prompt of a problem as the model sees it (the chat template applied, or the raw text; computed once).
        A format that needs a chat template the tokenizer lacks raises EvalSettingsError."""
        key = (lb.benchmark.name, p.index)
        if key not in self._prompts:
            try:
                self._prompts[key] = render(self.prompt, p.problem, self.tokenizer, self.config.model)
            except PromptError as e:
                raise EvalSettingsError(str(e)) from None
        return self._prompts[key]

    def ids_of(self, lb: LoadedBenchmark, p: Problem) -> list[int]:
        """The prompt of a problem as token ids (computed once). Raw text gets the tokenizer's special tokens (a
        BOS), as TRL tokenises a raw training prompt; a chat template already holds them."""
        key = (lb.benchmark.name, p.index)
        if key not in self._prompt_ids:
            special = not self.prompt.chat_template
            self._prompt_ids[key] = prompt_ids(self.tokenizer, self.text_of(lb, p), add_special_tokens=special)
        return self._prompt_ids[key]

    @property
    def backend(self) -> Backend:
        """The backend passed in, else the one the config names (built on first use: it loads the model)."""
        if self._backend is None:
            c = self.config
            if c.backend == "vllm":
                from dler.eval.vllm_backend import VLLMBackend

                self._backend = VLLMBackend(
                    c.model, tensor_parallel_size=c.tensor_parallel_size, data_parallel_size=c.data_parallel_size,
                    seed=c.seed, max_model_len=c.max_model_len, gpu_memory_utilization=c.gpu_memory_utilization,
                    dtype=c.dtype, enforce_eager=c.enforce_eager, progress=c.progress,
                    seed_per_request=c.seed_per_request or c.reproducible, batch_invariant=c.reproducible,
                )  # fmt: skip
            else:
                from dler.eval.generate import TransformersBackend

                self._backend = TransformersBackend(c.model, tokenizer=self._tokenizer, dtype=c.dtype)
        return self._backend

    @property
    def built_backend(self) -> Backend | None:
        """The backend if there is one yet (passed in or built), without building it."""
        return self._backend

    @property
    def backend_info(self) -> dict[str, Any] | None:
        return self._backend.info() if self._backend is not None and hasattr(self._backend, "info") else None

    @property
    def grader(self):
        if self._grader is None:
            from dler.rewards import MathReward

            c = self.config
            self._grader = MathReward(num_workers=c.grader_workers, grader=c.grader, answer_region=c.answer_region)
        return self._grader

    def plan(self, generations: list[Generations], sequences: int) -> None:
        """Count the problems asked for and those already done, and check what still needs generating (prompt
        lengths, the CPU fallback) before anything is written; `sequences`: how many decode together."""
        self.counter.total = sum(len(g.loaded.problems) for g in generations)
        self.counter.done = sum(len(g.loaded.problems) - len(g.missing) for g in generations)
        if self.counter.done:  # a rerun: say what it picks up
            logger.info(
                "resuming: %d of %d problems done in %s%s", self.counter.done, self.counter.total,
                self.config.output_dir, "; recomputing the results only" if self.counter.done == self.counter.total
                else "",
            )  # fmt: skip
        need = {g.name: g.loaded for g in generations if g.missing}
        if need:
            samples = sum(g.n * len(g.missing) for g in generations)
            given = None if self._own_backend else self._backend
            preflight(self.config, given, self.ids_of, list(need.values()), samples, sequences)

    def problem_done(self, benchmark: str, index: int) -> None:
        """Count a problem whose line was written, and tell the caller."""
        self.counter.done += 1
        if self.on_problem is not None:
            self.on_problem(benchmark, index)

    def progress_bar(self, total: int, desc: str, position: int = 0):
        """A tqdm bar (problems on the first line, samples below), shown when the config asks for progress."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="problem" if position == 0 else "sample",
                    disable=not self.config.progress, position=position, leave=position == 0,
                    dynamic_ncols=True)  # fmt: skip

    def close(self) -> None:
        """Close the grader and backend this session built (not those passed in)."""
        if self._own_grader and self._grader is not None:
            self._grader.close()
        if self._own_backend and self._backend is not None:
            self._backend.close()
