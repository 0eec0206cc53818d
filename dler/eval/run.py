"""The evaluation loop: prompts -> samples -> grades -> resumable JSONL -> metrics -> results.json.

Each problem's line is appended and flushed as soon as it is generated and graded (vLLM: as each request finishes;
transformers: per chunk). A rerun with the same settings loads the lines already there, skips those problems and
generates the rest; an interrupted last line is dropped with a warning. Rerunning a finished run only recomputes
results.json (no model is loaded). Everything that can be checked (settings, model path or id, benchmark files,
prompt lengths against the context length) is checked before anything is written or any model is loaded. The
files are described in `dler.eval.store`; the test-time scaling mode is `dler.eval.scaling`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dler.eval import metrics as M
from dler.eval.benchmarks import BenchmarkError, Problem
from dler.eval.generate import Backend, Request, Sample, SamplingSettings
from dler.eval.protocol import RESUME_KEYS, check_protocol, derive_seed, finish_protocol, resume_key, start_protocol
from dler.eval.session import Session
from dler.eval.settings import EvalConfig, seeding
from dler.eval.store import (
    GENERATIONS_DIR,
    PROTOCOL_FILE,
    RESULTS_FILE,
    Generations,
    ProblemRecord,
    has_lines,
    write_json,
    write_problem_csv,
)

logger = logging.getLogger(__name__)


@dataclass
class _Run:
    """One run directory (one temperature): what it samples, its resume key, the protocol already there (None:
    a new run) and each benchmark's generations."""

    settings: SamplingSettings
    directory: Path
    key: dict[str, Any]
    old: dict[str, Any] | None
    generations: list[Generations]


def evaluate(
    config: EvalConfig,
    backend: Backend | None = None,
    tokenizer=None,
    grader=None,
    on_problem: Callable[[str, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run (or resume) the evaluation; returns {run directory: results} (one per temperature).

    `backend`, `tokenizer` and `grader` replace the ones built from `config` (tests, or sharing a loaded model);
    `on_problem(benchmark, index)` is called after each problem's line is written. Ctrl-C raises EvalInterrupted
    (a KeyboardInterrupt) with the number of problems done; the same call resumes.
    """
    if config.parallel_k is not None:
        raise ValueError("config.parallel_k is set: the test-time scaling mode is evaluate_scaling(config)")
    with Session(config, backend, tokenizer, grader, on_problem) as session:
        config = session.config
        runs = []
        for temperature, directory in config.run_dirs():  # every check before anything is written
            n = 1 if temperature == 0 else config.n
            if temperature == 0 and config.n > 1:
                logger.info("temperature 0 is greedy: one sample per problem instead of %d", config.n)
            key = resume_key(config, temperature, n, session.seeding)
            has_samples = has_lines(directory / GENERATIONS_DIR, "*.jsonl")
            old = check_protocol(directory / PROTOCOL_FILE, key, RESUME_KEYS, has_samples)
            generations = [
                Generations.open(lb, directory / GENERATIONS_DIR / f"{lb.benchmark.name}.jsonl", n)
                for lb in session.loaded
            ]
            settings = SamplingSettings(n, temperature, config.top_p, config.max_tokens, stop=session.prompt.stop)
            runs.append(_Run(settings, directory, key, old, generations))
        session.plan([g for run in runs for g in run.generations], max(32, config.n))
        results = {str(run.directory): _run_one(session, run) for run in runs}
        for warning in think_warnings(results, config.answer_region):
            logger.warning(warning)
        return results


def think_warnings(results: dict[str, dict[str, Any]], answer_region: str) -> list[str]:
    """For an "after-think" run, a warning per benchmark where most responses never close their thinking: they all
    score 0, the mark of a model that answers without thinking tags evaluated with the wrong grader."""
    if answer_region != "after-think":
        return []
    out = []
    for run_dir, r in results.items():
        for name, m in r["benchmarks"].items():
            if m.get("think_unclosed", 0) > 0.5:
                out.append(
                    f"{run_dir} {name}: {m['think_unclosed']:.0%} of the responses never close their thinking with "
                    "</think>, and the answer region is 'after-think', so every one of them scored 0. A model that "
                    "answers without thinking tags is evaluated with --answer-region whole (or a --prompt-format "
                    "whose region is 'whole'; docs/prompts.md)."
                )
    return out


def _run_one(session: Session, run: _Run) -> dict[str, Any]:
    """Generate what one run directory lacks, then write its per-problem CSVs, protocol and results.json."""
    config, temperature = session.config, run.settings.temperature
    run.directory.mkdir(parents=True, exist_ok=True)
    sampling = {"n": run.settings.n, "n_requested": config.n, "temperature": temperature,
                "top_p": config.top_p if temperature > 0 else 1.0, "top_k": None, "max_tokens": config.max_tokens,
                "seed": config.seed, "greedy": temperature == 0}  # fmt: skip
    chunk_size = None if config.backend == "vllm" else config.chunk()  # vLLM: every problem at once
    protocol = start_protocol(run.directory, session, run.key, run.old, sampling=sampling, chunk_size=chunk_size)
    generated = _generate(session, run.settings, run.generations)
    per_benchmark: dict[str, dict[str, Any]] = {}
    for g in run.generations:
        records = g.records()
        if not records:
            raise BenchmarkError(f"benchmark {g.name} has no problems")
        write_problem_csv(run.directory / GENERATIONS_DIR / f"{g.name}.csv", records)
        summary = M.summarize(records)
        summary["grading"] = dict(Counter(s for r in records for s in r["status"]))
        summary["think_unclosed"] = M.think_unclosed(records)
        invalid = summary["grading"].get("invalid_gold", 0)
        if invalid:
            logger.warning("%s: %d samples scored 0 because their gold answer cannot be parsed", g.name, invalid)
        per_benchmark[g.name] = summary
    sources = {g.name: g.loaded.source for g in run.generations}
    finish_protocol(run.directory, protocol, session, {"problems_generated": generated}, sources)
    results = {"protocol": protocol, "benchmarks": per_benchmark, "overall": M.overall(per_benchmark)}
    write_json(run.directory / RESULTS_FILE, results)
    return results


class _Writer:
    """Grades finished problems and appends their records (fsync at most every few seconds and at the end)."""

    SYNC_EVERY_S = 5.0

    def __init__(self, session: Session, n: int, gen_bar, grade_bar):
        self.session, self.n, self.gen_bar, self.grade_bar = session, n, gen_bar, grade_bar
        self.generated = 0
        self._dirty: set[Generations] = set()
        self._last_sync = time.monotonic()

    def write(self, finished: list[tuple[Generations, Problem, Request, list[Sample]]]) -> None:
        n = self.n
        for g, p, _, samples in finished:
            if len(samples) != n:
                raise RuntimeError(f"the backend returned {len(samples)} samples for {g.name}[{p.index}], not {n}")
        texts = [s.text for *_, samples in finished for s in samples]
        golds = [p.answer for _, p, _, samples in finished for _ in samples]
        grades = self.session.grader.grade(texts, golds)
        self.grade_bar.update(len(grades))
        for j, (g, p, request, samples) in enumerate(finished):
            g.add(ProblemRecord(g.name, p, request, samples, grades[j * n : (j + 1) * n]).to_json())
            self._dirty.add(g)
            self.generated += 1
            self.gen_bar.update(1)
            self.session.problem_done(g.name, p.index)
        if time.monotonic() - self._last_sync >= self.SYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        for g in self._dirty:
            g.store.sync()
        self._dirty.clear()
        self._last_sync = time.monotonic()


def _chunks(generations: list[Generations], size: int) -> Iterator[tuple[Generations, list[Problem]]]:
    """Each benchmark's problems cut into the same chunks of `size` on every run (so that a backend seeded per call
    regenerates a chunk exactly), those with a problem still to do."""
    for g in generations:
        problems = g.loaded.problems
        for start in range(0, len(problems), size):
            chunk = problems[start : start + size]
            if any(p.index not in g.done for p in chunk):
                yield g, chunk


def _generate(session: Session, settings: SamplingSettings, generations: list[Generations]) -> int:
    """Generate and grade every missing problem of one run directory; returns how many were generated.

    A backend that streams (vLLM) gets every missing problem of every benchmark at once and each is written as it
    finishes; any other backend is called on fixed chunks of `chunk_size` problems per benchmark (a backend seeded
    per call regenerates a whole chunk, so that its samples match an uninterrupted run)."""
    todo = [(g, p) for g in generations for p in g.missing]
    if not todo:
        return 0
    config, backend = session.config, session.backend
    label = generations[0].name if len(generations) == 1 else f"{len(generations)} benchmarks"
    gen_bar = session.progress_bar(len(todo), f"{label} T={settings.temperature:g} generate")
    grade_bar = session.progress_bar(len(todo) * settings.n, "grade", position=1)
    writer = _Writer(session, settings.n, gen_bar, grade_bar)

    def request(g: Generations, p: Problem) -> Request:
        return Request(session.ids_of(g.loaded, p), derive_seed(config.seed, g.name, p.index))

    try:
        if hasattr(backend, "generate_stream"):
            jobs = [(g, p, request(g, p)) for g, p in todo]
            with contextlib.closing(backend.generate_stream([r for *_, r in jobs], settings)) as stream:
                for batch in stream:
                    writer.write([(*jobs[i], samples) for i, samples in batch])
        else:
            whole_chunks = seeding(config, backend) == "call"
            for g, chunk in _chunks(generations, config.chunk()):
                batch = chunk if whole_chunks else [p for p in chunk if p.index not in g.done]
                requests = [request(g, p) for p in batch]
                outputs = backend.generate(requests, settings)
                if len(outputs) != len(batch):
                    raise RuntimeError(f"the backend returned {len(outputs)} outputs for {len(batch)} prompts")
                writer.write([(g, p, r, o) for p, r, o in zip(batch, requests, outputs, strict=True)
                              if p.index not in g.done])  # fmt: skip
                writer.sync()
    finally:
        writer.sync()
        for g in generations:
            g.store.close()
        grade_bar.close()
        gen_bar.close()
    return writer.generated


def format_summary(results: dict[str, Any]) -> str:
    """A few lines per run for the terminal: pass@1 and mean length per benchmark."""
    s = results["protocol"]["sampling"]
    lines = [f"T={s['temperature']:g} n={s['n']} max_tokens={s['max_tokens']}"]
    for name, m in {**results["benchmarks"], "overall": results["overall"]}.items():
        lines.append(
            f"  {name:<10} pass@1 {100 * m['pass@1']:6.2f}  mean length {m['mean_length']:9.1f}  "
            f"truncated {100 * m['truncation_rate']:5.1f}%"
        )
    return "\n".join(lines)
