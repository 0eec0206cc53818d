"""The evaluation loop: prompts -> samples -> grades -> resumable JSONL -> metrics -> results.json.

Layout of a run directory (one per temperature; a sweep writes `DIR/t0/`, `DIR/t0.6/`, ...):

    protocol.json                  settings that must not change on resume, sessions, versions
    generations/<benchmark>.jsonl  one line per problem: its n responses, token counts, truncation, grades
    results.json                   protocol + metrics per benchmark and overall

Each problem's line is appended and flushed as soon as its chunk is generated and graded. A rerun with the same
settings loads the lines already there, skips those problems and generates the rest; an interrupted last line is
dropped with a warning. Rerunning a finished run only recomputes results.json (no model is loaded).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dler.eval import metrics as M
from dler.eval.benchmarks import (
    DEFAULT_BENCHMARKS,
    R1_PROMPT_TEMPLATE,
    Benchmark,
    BenchmarkError,
    LoadedBenchmark,
    Problem,
    build_prompt,
    check_local_files,
    load_benchmark,
    parse_benchmarks,
    prompt_ids,
)
from dler.eval.generate import Backend, Request, SamplingSettings, resolve_backend
from dler.rewards import check_grader

logger = logging.getLogger(__name__)

PROTOCOL_FILE = "protocol.json"
RESULTS_FILE = "results.json"
GENERATIONS_DIR = "generations"
# settings a resumed run must share with the lines already written
RESUME_KEYS = (
    "model", "backend", "n", "temperature", "top_p", "max_tokens", "seed", "prompt_template", "chunk_size", "grader",
)  # fmt: skip
# the value of a resume key in runs written before the key existed
_RESUME_DEFAULTS = {"grader": "dler"}


class ResumeError(ValueError):
    """The output directory holds a run made with different settings, or with different problems."""


@dataclass
class EvalConfig:
    """Everything `dler eval` does. Defaults are the DLER paper's protocol (vLLM, T=0.6, top_p=0.95, 32k, n=16)."""

    model: str
    output_dir: str
    benchmarks: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    n: int = 16
    temperatures: list[float] = field(default_factory=lambda: [0.6])
    top_p: float = 0.95
    max_tokens: int = 32768
    backend: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    limit: int | None = None
    chunk_size: int | None = None  # problems per generation call; None: 256 with vLLM, max(1, 32 // n) otherwise
    prompt_template: str = R1_PROMPT_TEMPLATE
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    enforce_eager: bool = False
    grader_workers: int | None = None  # None: the math reward's default pool; 0: grade in this process
    grader: str = "dler"  # "dler" or "released" (DLER's released reward); see dler.rewards.MathReward
    progress: bool = True

    def validate(self) -> list[Benchmark]:
        """Check every setting and benchmark file, before any model is loaded. Returns the benchmarks."""
        benchmarks = parse_benchmarks(self.benchmarks)
        check_grader(self.grader, "--grader")
        if self.data_dir is not None:
            check_local_files(benchmarks, self.data_dir)
        if not self.temperatures:
            raise ValueError("give at least one temperature")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"duplicate temperatures: {self.temperatures}")
        for t in self.temperatures:
            SamplingSettings(self.n, t, self.top_p, self.max_tokens)  # raises on a bad value
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"--chunk-size must be >= 1, got {self.chunk_size}")
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ValueError("--tensor-parallel-size and --data-parallel-size must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if "{problem}" not in self.prompt_template:
            raise ValueError("the prompt template must contain {problem}")
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ValueError(f"--output-dir {self.output_dir} exists and is not a directory")
        self.backend = resolve_backend(self.backend)
        if self.backend != "vllm" and (self.tensor_parallel_size > 1 or self.data_parallel_size > 1):
            raise ValueError("--tensor-parallel-size / --data-parallel-size need --backend vllm")
        return benchmarks

    def chunk(self) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return 256 if self.backend == "vllm" else max(1, 32 // self.n)

    def run_dirs(self) -> list[tuple[float, Path]]:
        """(temperature, directory) per run: the output directory itself, or one `t<T>` folder per temperature."""
        root = Path(self.output_dir)
        if len(self.temperatures) == 1:
            return [(self.temperatures[0], root)]
        return [(t, root / f"t{t:g}") for t in self.temperatures]


# --------------------------------------------------------------------------------------------- the JSONL store


class GenerationStore:
    """One benchmark's generations: one JSON line per problem, appended and flushed as problems finish."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None

    def load(self) -> dict[int, dict]:
        """The records already written, by problem index. A last line cut off mid-write is dropped (and removed
        from the file, so that appending continues on a clean line); a bad line elsewhere is an error."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        records: dict[int, dict] = {}
        pos = 0
        while pos < len(data):
            newline = data.find(b"\n", pos)
            end = newline if newline != -1 else len(data)
            line = data[pos:end]
            if line.strip():
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict) or "index" not in record:
                        raise ValueError("not a generation record")
                except ValueError as exc:
                    if data[end + 1 :].strip():  # more lines follow: this is not an interrupted write
                        lineno = data.count(b"\n", 0, pos) + 1
                        raise ResumeError(f"{self.path}:{lineno} is corrupt ({exc}); fix or delete the file") from None
                    logger.warning(
                        "%s: ignoring an incomplete last line (%d bytes): the run was interrupted while writing it",
                        self.path, len(line),
                    )  # fmt: skip
                    with open(self.path, "r+b") as f:  # drop it, so that appending starts on a clean line
                        f.truncate(pos)
                    break
                if newline == -1:  # a complete record whose newline was never written
                    with open(self.path, "ab") as f:
                        f.write(b"\n")
                records[int(record["index"])] = record
            pos = end + 1
        return records

    def append(self, record: dict) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def sync(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------------------------- protocol


def derive_seed(seed: int, benchmark: str, index: int) -> int:
    """A problem's own seed: stable across runs, chunkings and resumptions."""
    digest = hashlib.sha256(f"{seed}:{benchmark}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def versions() -> dict[str, str | None]:
    """Versions of the stack that produced the numbers (None: not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in (
        "dler",
        "torch",
        "transformers",
        "trl",
        "vllm",
        "math-verify",
        "datasets",
        "tokenizers",
        "accelerate",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not cost the results
        pass
    return info


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _model_record(model: str) -> dict[str, Any]:
    path = Path(model)
    record: dict[str, Any] = {"model": model}
    if path.exists():
        record["model_path"] = str(path.resolve())
        config = path / "config.json"
        if config.is_file():
            record["model_config_sha256"] = hashlib.sha256(config.read_bytes()).hexdigest()
    return record


def _resume_key(config: EvalConfig, temperature: float, n: int) -> dict[str, Any]:
    return {
        "model": config.model,
        "backend": config.backend,
        "n": n,
        "temperature": temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "seed": config.seed,
        "prompt_template": config.prompt_template,
        # transformers seeds each generation call: its chunking is part of the samples; vLLM seeds each problem
        "chunk_size": config.chunk() if config.backend == "transformers" else None,
        "grader": config.grader,
    }


def _check_protocol(run_dir: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    path = run_dir / PROTOCOL_FILE
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    old_key = old.get("resume_key", {})
    diff = {
        k: (old_key.get(k, _RESUME_DEFAULTS.get(k)), key.get(k))
        for k in RESUME_KEYS
        if old_key.get(k, _RESUME_DEFAULTS.get(k)) != key.get(k)
    }
    if diff:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise ResumeError(
            f"{run_dir} holds a run with different settings ({shown}). Resume it with its own settings, or pass "
            "another --output-dir."
        )
    return old


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


# --------------------------------------------------------------------------------------------- the loop


def _chunks(problems: list[Problem], size: int) -> list[list[Problem]]:
    return [problems[i : i + size] for i in range(0, len(problems), size)]


def _progress(total: int, desc: str, enabled: bool, position: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="problem" if position == 0 else "sample", disable=not enabled,
                position=position, leave=position == 0, dynamic_ncols=True)  # fmt: skip


class _Lazy:
    """The tokenizer, backend and grader are only built when some problem still needs generating."""

    def __init__(self, config: EvalConfig, backend: Backend | None, tokenizer, grader):
        self.config = config
        self._backend, self._tokenizer, self._grader = backend, tokenizer, grader
        self._own_backend = backend is None
        self._own_grader = grader is None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self._backend is not None and getattr(self._backend, "tokenizer", None) is not None:
                self._tokenizer = self._backend.tokenizer
            else:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        return self._tokenizer

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            c = self.config
            if c.backend == "vllm":
                from dler.eval.generate import VLLMBackend

                self._backend = VLLMBackend(
                    c.model, tensor_parallel_size=c.tensor_parallel_size, data_parallel_size=c.data_parallel_size,
                    seed=c.seed, max_model_len=c.max_model_len, gpu_memory_utilization=c.gpu_memory_utilization,
                    dtype=c.dtype, enforce_eager=c.enforce_eager, progress=c.progress,
                )  # fmt: skip
            else:
                from dler.eval.generate import TransformersBackend

                self._backend = TransformersBackend(c.model, tokenizer=self._tokenizer, dtype=c.dtype)
        return self._backend

    @property
    def grader(self):
        if self._grader is None:
            from dler.rewards import MathReward

            self._grader = MathReward(num_workers=self.config.grader_workers, grader=self.config.grader)
        return self._grader

    @property
    def backend_info(self) -> dict[str, Any] | None:
        return self._backend.info() if self._backend is not None and hasattr(self._backend, "info") else None

    def close(self) -> None:
        if self._own_grader and self._grader is not None:
            self._grader.close()
        if self._own_backend and self._backend is not None:
            self._backend.close()


def _generate_benchmark(
    loaded: LoadedBenchmark,
    run_dir: Path,
    settings: SamplingSettings,
    config: EvalConfig,
    lazy: _Lazy,
    on_problem: Callable[[str, int], None] | None,
) -> tuple[list[dict], int]:
    """Generate and grade what is missing for one benchmark; returns (records in problem order, newly generated)."""
    name = loaded.benchmark.name
    store = GenerationStore(run_dir / GENERATIONS_DIR / f"{name}.jsonl")
    done = store.load()
    for p in loaded.problems:
        record = done.get(p.index)
        if record is not None and record.get("digest") != p.digest:
            raise ResumeError(
                f"{store.path}: problem {p.index} differs from the one generated before (the benchmark data changed); "
                "use another --output-dir"
            )
        if record is not None and len(record.get("correct", ())) != settings.n:
            raise ResumeError(
                f"{store.path}: problem {p.index} has {len(record['correct'])} samples, not {settings.n}"
            )
    missing = [p for p in loaded.problems if p.index not in done]
    generated = 0
    if missing:
        backend = lazy.backend
        chunk_size = config.chunk()
        missing_ids = {p.index for p in missing}
        gen_bar = _progress(len(missing), f"{name} T={settings.temperature:g} generate", config.progress, 0)
        grade_bar = _progress(len(missing) * settings.n, f"{name} grade", config.progress, 1)
        try:
            for chunk in _chunks(loaded.problems, chunk_size):
                todo = [p for p in chunk if p.index in missing_ids]
                if not todo:
                    continue
                # transformers seeds each call: regenerate the whole chunk so its samples match an uninterrupted run
                batch = todo if getattr(backend, "per_request_seed", False) else chunk
                prompts = [prompt_ids(lazy.tokenizer, build_prompt(lazy.tokenizer, p.problem, config.prompt_template))
                           for p in batch]  # fmt: skip
                seeds = [derive_seed(config.seed, name, p.index) for p in batch]
                requests = [Request(ids, s) for ids, s in zip(prompts, seeds, strict=True)]
                outputs = backend.generate(requests, settings)
                keep = [i for i, p in enumerate(batch) if p.index in missing_ids]
                texts = [s.text for i in keep for s in outputs[i]]
                golds = [batch[i].answer for i in keep for _ in outputs[i]]
                grades = lazy.grader.grade(texts, golds)
                grade_bar.update(len(grades))
                for j, i in enumerate(keep):
                    p, samples = batch[i], outputs[i]
                    g = grades[j * settings.n : (j + 1) * settings.n]
                    if len(samples) != settings.n:
                        raise RuntimeError(
                            f"the backend returned {len(samples)} samples for {name}[{p.index}], not {settings.n}"
                        )
                    record = {
                        "benchmark": name,
                        "index": p.index,
                        "digest": p.digest,
                        "seed": seeds[i],
                        "prompt_tokens": len(prompts[i]),
                        "problem": p.problem,
                        "gold": _json_value(p.answer),
                        "responses": [s.text for s in samples],
                        "tokens": [s.tokens for s in samples],
                        "truncated": [s.truncated for s in samples],
                        "finish_reasons": [s.finish_reason for s in samples],
                        "correct": [x.score for x in g],
                        "extracted": [x.answer for x in g],
                        "status": [x.status for x in g],
                    }
                    store.append(record)
                    done[p.index] = record
                    generated += 1
                    gen_bar.update(1)
                    if on_problem is not None:
                        on_problem(name, p.index)
                store.sync()
        finally:
            store.close()
            grade_bar.close()
            gen_bar.close()
    return [done[p.index] for p in loaded.problems], generated


def _describe_grader(grader) -> dict[str, Any]:
    """What graded the samples, from the grader object itself (a custom grader is named by its type)."""
    describe = getattr(grader, "describe", None)
    if callable(describe):
        return describe()
    return {
        "reward": f"{type(grader).__module__}.{type(grader).__qualname__}",
        "grader": getattr(grader, "grader", None),
    }


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def evaluate(
    config: EvalConfig,
    backend: Backend | None = None,
    tokenizer=None,
    grader=None,
    on_problem: Callable[[str, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run (or resume) the evaluation; returns {run directory: results} (one per temperature).

    `backend`, `tokenizer` and `grader` replace the ones built from `config` (tests, or sharing a loaded model);
    `on_problem(benchmark, index)` is called after each problem's line is written.
    """
    benchmarks = config.validate()
    if backend is not None:  # record (and resume-check) the backend actually used
        config = replace(config, backend=getattr(backend, "name", config.backend))
    if grader is not None:  # and the grader actually used
        config = replace(config, grader=getattr(grader, "grader", config.grader))
    if config.data_dir is None and os.environ.get("HF_HUB_OFFLINE") == "1":
        logger.warning("HF_HUB_OFFLINE=1 and no --data-dir: the benchmarks must already be in the datasets cache")
    # golds are checked by the grader passed in (its workers), else in this process by the configured grader
    gold_grader = grader if hasattr(grader, "check_answers") else config.grader
    loaded = [load_benchmark(b, config.data_dir, config.limit, grader=gold_grader) for b in benchmarks]
    lazy = _Lazy(config, backend, tokenizer, grader)
    out: dict[str, dict[str, Any]] = {}
    try:
        for temperature, run_dir in config.run_dirs():
            n = 1 if temperature == 0 else config.n
            if temperature == 0 and config.n > 1:
                logger.info("temperature 0 is greedy: one sample per problem instead of %d", config.n)
            settings = SamplingSettings(n, temperature, config.top_p, config.max_tokens)
            key = _resume_key(config, temperature, n)
            old = _check_protocol(run_dir, key)
            run_dir.mkdir(parents=True, exist_ok=True)
            protocol = {
                **_model_record(config.model),
                "backend": config.backend,
                "sampling": {
                    "n": n,
                    "n_requested": config.n,
                    "temperature": temperature,
                    "top_p": config.top_p if temperature > 0 else 1.0,
                    "top_k": None,
                    "max_tokens": config.max_tokens,
                    "seed": config.seed,
                    "greedy": temperature == 0,
                },  # fmt: skip
                "prompt_template": config.prompt_template,
                "chat_template": True,
                "chunk_size": config.chunk(),
                "grader": _describe_grader(lazy.grader),
                "resume_key": key,
                "config": {k: v for k, v in asdict(config).items() if k != "progress"},
                "command": sys.argv if Path(sys.argv[0]).name in ("dler", "__main__.py", "cli.py") else None,
                "sessions": (old or {}).get("sessions", []) + [{"started": _now()}],
            }
            _write_json(run_dir / PROTOCOL_FILE, protocol)
            per_benchmark: dict[str, dict[str, Any]] = {}
            sources: dict[str, Any] = {}
            generated_total = 0
            for lb in loaded:
                records, generated = _generate_benchmark(lb, run_dir, settings, config, lazy, on_problem)
                generated_total += generated
                if not records:
                    raise BenchmarkError(f"benchmark {lb.benchmark.name} has no problems")
                summary = M.summarize(records)
                summary["grading"] = dict(Counter(s for r in records for s in r["status"]))
                invalid = summary["grading"].get("invalid_gold", 0)
                if invalid:
                    logger.warning(
                        "%s: %d samples scored 0 because their gold answer cannot be parsed",
                        lb.benchmark.name,
                        invalid,
                    )
                per_benchmark[lb.benchmark.name] = summary
                sources[lb.benchmark.name] = lb.source
            protocol["sessions"][-1].update({"finished": _now(), "problems_generated": generated_total})
            if lazy.backend_info is not None:
                protocol["backend_info"] = lazy.backend_info
            protocol["benchmarks"] = sources
            protocol["limit"] = config.limit
            protocol["versions"] = versions()
            protocol["hardware"] = hardware()
            _write_json(run_dir / PROTOCOL_FILE, protocol)
            results = {"protocol": protocol, "benchmarks": per_benchmark, "overall": M.overall(per_benchmark)}
            _write_json(run_dir / RESULTS_FILE, results)
            out[str(run_dir)] = results
    finally:
        lazy.close()
    return out


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
