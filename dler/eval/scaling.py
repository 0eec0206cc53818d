"""The DLER paper's test-time scaling measurement (Table 5, `dler eval --parallel-k 1,2,...`): for each K and each
question, one request for K samples, timed with a wall clock, questions one at a time; Pass@K against latency.
Its files (`scaling/`, `scaling.json`) are described in `dler.eval.store`."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dler.eval.generate import Backend, Request, SamplingSettings
from dler.eval.protocol import check_protocol, derive_seed, finish_protocol, start_protocol
from dler.eval.session import Session
from dler.eval.settings import EvalConfig
from dler.eval.store import PROTOCOL_FILE, SCALING_DIR, SCALING_FILE, Generations, ProblemRecord, has_lines, write_json
from dler.prompts import prompt_settings

# what a resumed scaling run must share with the questions already timed: everything that changes the samples
# or the wall time of generating them
SCALING_RESUME_KEYS = (
    "model", "backend", "temperature", "top_p", "max_tokens", "seed", "prompt_template", "grader", "seeding",
    "reproducible", "tensor_parallel_size", "max_model_len", "gpu_memory_utilization", "dtype", "enforce_eager",
    "gpus", "prompt",
)  # fmt: skip
LATENCY_DEFINITION = (
    "wall-clock seconds (time.perf_counter) from submitting a question's one request for K samples to receiving "
    "all K; questions one at a time, after one short warm-up request per session; tokenisation and grading excluded"
)


def _gpu_names() -> list[str]:
    """Names of the visible GPUs (nvidia-smi; CUDA is not initialised in this process); [] without any."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = dict(line.split(", ", 1) for line in out.strip().splitlines() if ", " in line)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    order = [d.strip() for d in visible.split(",") if d.strip()] if visible else list(gpus)
    return [gpus[d] for d in order if d in gpus]


def _se(values: list[float]) -> float | None:
    """Standard error of the mean over questions (std with ddof=1 / sqrt(P)); None for fewer than 2 values."""
    import numpy as np

    if len(values) < 2:
        return None
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def scaling_entry(records: list[dict], k: int) -> dict[str, Any]:
    """One point of the Pass@K-against-latency curve from the questions' records (each with k samples):
    pass_at_k is the fraction of questions with at least one correct sample among their k (Pass@K over exactly
    k samples, no estimator), latency_s the mean per-question wall time; standard errors over questions."""
    if not records:
        raise ValueError("no questions")
    for r in records:
        if len(r["correct"]) != k:
            raise ValueError(f"{r['benchmark']}[{r['index']}] has {len(r['correct'])} samples, not K={k}")
    hits = [float(any(float(x) >= 0.5 for x in r["correct"])) for r in records]
    latency = [float(r["latency_s"]) for r in records]
    tokens = [int(t) for r in records for t in r["tokens"]]
    return {
        "k": k,
        "pass_at_k": sum(hits) / len(hits),
        "pass_at_k_se": _se(hits),
        "mean_length": sum(tokens) / len(tokens),
        "latency_s": sum(latency) / len(latency),
        "latency_se": _se(latency),
        "problems": len(records),
    }


def _scaling_key(config: EvalConfig, seeding: str) -> dict[str, Any]:
    return {
        "model": config.model,
        "backend": config.backend,
        "temperature": config.temperatures[0],
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "seed": config.seed,
        "prompt_template": config.prompt_template,
        "grader": config.grader,
        "seeding": seeding,
        "reproducible": config.reproducible,
        "tensor_parallel_size": config.tensor_parallel_size,
        "max_model_len": config.max_model_len,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "dtype": config.dtype,
        "enforce_eager": config.enforce_eager,
        "gpus": _gpu_names(),
        "prompt": prompt_settings(config.prompt()),
    }


def _scaling_results(config: EvalConfig, cells: dict[tuple[int, str], Generations], protocol: dict) -> dict[str, Any]:
    """scaling.json: for every benchmark, one entry per K whose questions are all done (in K order)."""
    benchmarks: dict[str, list[dict[str, Any]]] = {}
    for (k, name), g in sorted(cells.items()):
        entries = benchmarks.setdefault(name, [])
        if not g.missing and g.loaded.problems:
            entries.append(scaling_entry(g.records(), k))
    order = list(dict.fromkeys(name for _, name in cells))
    return {"model": config.model, "backend": config.backend,
            "benchmarks": {name: benchmarks[name] for name in order}, "protocol": protocol}  # fmt: skip


def evaluate_scaling(
    config: EvalConfig,
    backend: Backend | None = None,
    tokenizer=None,
    grader=None,
    on_problem: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """The DLER paper's test-time scaling measurement (Table 5): for each K in `config.parallel_k` and each
    question, one request for K samples (n=K), timed with a wall clock, questions one at a time; graded as usual.

    Writes OUTPUT_DIR/scaling.json (after each K, and at the end) and returns its content. Resumable: each
    (K, question) is a line of OUTPUT_DIR/scaling/<benchmark>.k<K>.jsonl with its own latency, and a rerun with
    the same settings (and the same GPUs) times only the questions still missing. Ctrl-C raises EvalInterrupted.
    """
    if not config.parallel_k:
        raise ValueError("evaluate_scaling needs config.parallel_k, the K values (e.g. [1, 2, 4, 8])")
    with Session(config, backend, tokenizer, grader, on_problem) as session:
        return _scaling(session)


def _scaling(session: Session) -> dict[str, Any]:
    config = session.config
    temperature, ks = config.temperatures[0], list(config.parallel_k)
    root = Path(config.output_dir)
    sdir = root / SCALING_DIR
    key = _scaling_key(config, session.seeding)
    old = check_protocol(sdir / PROTOCOL_FILE, key, SCALING_RESUME_KEYS, has_lines(sdir, "*.jsonl"))
    cells = {(k, lb.benchmark.name): Generations.open(lb, sdir / f"{lb.benchmark.name}.k{k}.jsonl", k)
             for k in ks for lb in session.loaded}  # fmt: skip
    session.plan(list(cells.values()), max(ks))
    sdir.mkdir(parents=True, exist_ok=True)
    sampling = {"ks": ks, "temperature": temperature, "top_p": config.top_p, "top_k": None,
                "max_tokens": config.max_tokens, "seed": config.seed, "greedy": False}  # fmt: skip
    protocol = start_protocol(
        sdir, session, key, old, sampling=sampling, latency=LATENCY_DEFINITION,
        mode="test-time scaling: one request with n=K per question, questions one at a time",
        pass_at_k="fraction of questions with at least one correct sample among exactly K; se over questions",
    )  # fmt: skip
    todo = [g for g in cells.values() if g.missing]
    if todo:
        protocol["sessions"][-1]["warmup_s"] = _warm_up(session, todo[0], temperature)
    generated = 0
    for k in ks:
        settings = SamplingSettings(k, temperature, config.top_p, config.max_tokens, stop=session.prompt.stop)
        for lb in session.loaded:
            generated += _time_questions(session, cells[(k, lb.benchmark.name)], settings)
        write_json(root / SCALING_FILE, _scaling_results(config, cells, protocol))
    sources = {lb.benchmark.name: lb.source for lb in session.loaded}
    finish_protocol(sdir, protocol, session, {"questions_timed": generated}, sources, gpus=key["gpus"])
    results = _scaling_results(config, cells, protocol)
    write_json(root / SCALING_FILE, results)
    return results


def _warm_up(session: Session, g: Generations, temperature: float) -> float:
    """One short request before any timing (it loads the model and warms the engine); its seconds, rounded."""
    config = session.config
    warm = Request(session.ids_of(g.loaded, g.missing[0]), config.seed)
    start = time.perf_counter()
    session.backend.generate([warm], SamplingSettings(1, temperature, config.top_p, min(16, config.max_tokens)))
    return round(time.perf_counter() - start, 3)


def _time_questions(session: Session, g: Generations, settings: SamplingSettings) -> int:
    """Time one request for K samples per question still missing from `g`, one at a time, and write each graded
    line with its latency (fsynced); returns how many were timed."""
    k, missing = settings.n, g.missing
    if not missing:
        return 0
    bar = session.progress_bar(len(missing), f"{g.name} K={k}")
    try:
        for p in missing:
            seed = derive_seed(session.config.seed, f"{g.name}@k{k}", p.index)
            request = Request(session.ids_of(g.loaded, p), seed)
            start = time.perf_counter()
            (samples,) = session.backend.generate([request], settings)
            latency = time.perf_counter() - start
            if len(samples) != k:
                raise RuntimeError(f"the backend returned {len(samples)} samples for K={k}")
            grades = session.grader.grade([s.text for s in samples], [p.answer] * k)
            g.add({"k": k, "latency_s": latency, **ProblemRecord(g.name, p, request, samples, grades).to_json()})
            g.store.sync()
            bar.update(1)
            session.problem_done(g.name, p.index)
    finally:
        g.store.close()
        bar.close()
    return len(missing)


def format_scaling_summary(results: dict[str, Any]) -> str:
    """Pass@K and latency per benchmark and K, for the terminal."""
    s = results["protocol"]["sampling"]
    lines = [f"test-time scaling: T={s['temperature']:g} max_tokens={s['max_tokens']} backend={results['backend']}"]
    for name, entries in results["benchmarks"].items():
        lines.append(f"  {name}")
        for e in entries:
            se = "" if e["pass_at_k_se"] is None else f" ± {100 * e['pass_at_k_se']:.2f}"
            lse = "" if e["latency_se"] is None else f" ± {e['latency_se']:.2f}"
            lines.append(
                f"    K={e['k']:<4} pass@K {100 * e['pass_at_k']:6.2f}{se:<9} latency {e['latency_s']:8.2f}s{lse:<9} "
                f"mean length {e['mean_length']:9.1f}  ({e['problems']} questions)"
            )
    return "\n".join(lines)
