"""The evaluation loop: prompts -> samples -> grades -> resumable JSONL -> metrics -> results.json.

Layout of a run directory (one per temperature; a sweep writes `DIR/t0/`, `DIR/t0.6/`, ...):

    protocol.json                  settings that must not change on resume, sessions, versions
    generations/<benchmark>.jsonl  one line per problem: its n responses, token counts, truncation, grades
    generations/<benchmark>.csv    one row per problem: samples, correct, mean correctness, mean length, truncated
    results.json                   protocol + metrics per benchmark and overall

Each problem's line is appended and flushed as soon as it is generated and graded (vLLM: as each request finishes;
transformers: per chunk). A rerun with the same settings loads the lines already there, skips those problems and
generates the rest; an interrupted last line is dropped with a warning. Rerunning a finished run only recomputes
results.json (no model is loaded). Everything that can be checked (settings, model path or id, benchmark files,
prompt lengths against the context length) is checked before anything is written or any model is loaded.

The test-time scaling mode (`evaluate_scaling`, `dler eval --parallel-k 1,2,...`) adds to the output directory:

    scaling/protocol.json          its settings (a resume must share them), sessions
    scaling/<benchmark>.k<K>.jsonl one line per question: its K responses, grades and wall-clock latency
    scaling.json                   Pass@K and latency per benchmark and K
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import io
import json
import logging
import math
import os
import platform
import re
import signal
import sys
import threading
import time
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
from dler.eval.generate import Backend, Request, Sample, SamplingSettings, resolve_backend
from dler.rewards import check_grader

logger = logging.getLogger(__name__)

PROTOCOL_FILE = "protocol.json"
RESULTS_FILE = "results.json"
GENERATIONS_DIR = "generations"
SCALING_FILE = "scaling.json"
SCALING_DIR = "scaling"
CSV_COLUMNS = ("benchmark", "index", "samples", "correct", "mean_correct", "mean_length", "truncated")
# settings a resumed run must share with the lines already written
RESUME_KEYS = (
    "model", "backend", "n", "temperature", "top_p", "max_tokens", "seed", "prompt_template", "chunk_size", "grader",
    "seeding",
)  # fmt: skip
# the value of a resume key in runs written before the key existed (from the old key)
_RESUME_DEFAULTS: dict[str, Callable[[dict], Any]] = {
    "grader": lambda old: "dler",
    # vLLM runs seeded every request before the engine-seeded default; transformers seeds each call
    "seeding": lambda old: {"vllm": "request", "transformers": "call"}.get(old.get("backend")),
}
_RESUME_HINTS = {
    "seeding": "(--seed-per-request or --reproducible give 'request' with vLLM; without them vLLM seeds the engine)",
}


class ResumeError(ValueError):
    """The output directory holds a run made with different settings, or with different problems."""


class EvalSettingsError(ValueError):
    """Settings that cannot give the asked-for evaluation (a missing model, a context too short), found before
    anything is written or any model is loaded."""


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during an evaluation: what was written is kept, and the same command resumes."""

    def __init__(self, done: int | None, total: int | None):
        super().__init__(done, total)
        self.done, self.total = done, total

    @property
    def message(self) -> str:
        if self.total is None:
            return "interrupted before any problem was generated; rerun the same command to start"
        return f"interrupted; rerun the same command to resume ({self.done} of {self.total} problems done)"


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
    chunk_size: int | None = None  # transformers: problems per generation call; None: max(1, 32 // n)
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
    # test-time scaling mode (evaluate_scaling): for each K, one request with n=K per question, timed
    parallel_k: list[int] | None = None
    seed_per_request: bool = False  # vLLM: SamplingParams(seed=) per problem (slower sampling path)
    reproducible: bool = False  # vLLM: VLLM_BATCH_INVARIANT=1 and per-request seeds
    auto_backend: bool = False  # set by validate(): the backend was chosen by --backend auto

    def validate(self, check_model: bool = True) -> list[Benchmark]:
        """Check every setting, benchmark file and (with `check_model`) the model path or hub id, before anything
        is written or any model is loaded. Returns the benchmarks."""
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
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"--max-model-len must be >= 1, got {self.max_model_len}")
        if "{problem}" not in self.prompt_template:
            raise ValueError("the prompt template must contain {problem}")
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ValueError(f"--output-dir {self.output_dir} exists and is not a directory")
        if self.parallel_k is not None:
            self._validate_scaling()
        if self.backend == "auto":
            self.auto_backend = True
        self.backend = resolve_backend(self.backend)
        if self.backend != "vllm" and (self.tensor_parallel_size > 1 or self.data_parallel_size > 1):
            raise ValueError("--tensor-parallel-size / --data-parallel-size need --backend vllm")
        if check_model:
            check_model_id(self.model)
        return benchmarks

    def _validate_scaling(self) -> None:
        ks = self.parallel_k
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"--parallel-k takes positive integers, e.g. 1,2,4,8; got {ks}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"duplicate values in --parallel-k: {ks}")
        if len(self.temperatures) != 1 or self.temperatures[0] == 0:
            raise ValueError(
                "--parallel-k samples K responses at one temperature > 0 (greedy decoding would repeat one "
                f"response K times); got --temperature {','.join(f'{t:g}' for t in self.temperatures)}"
            )
        if self.data_parallel_size != 1:
            raise ValueError("--parallel-k times one question at a time on one engine: use --data-parallel-size 1")
        self.parallel_k = sorted(ks)

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


# --------------------------------------------------------------------------------------------- the model

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


_HUB_MODELS_SEEN: set[str] = set()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def check_model_id(model: str) -> None:
    """`--model` is an existing local model (a folder with config.json, or a file) or a hub id that exists (in
    the local cache when HF_HUB_OFFLINE=1, else on the hub). Raises EvalSettingsError naming what is wrong."""
    if not model or not model.strip():
        raise EvalSettingsError("--model is empty")
    path = Path(model).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise EvalSettingsError(f"--model {model}: the folder has no config.json, so it is not a model folder")
        return
    hint = _close_paths(path)
    local_looking = model.startswith(("/", "./", "../", "~", ".\\")) or model.count("/") > 1 or "\\" in model
    if local_looking or not _HUB_ID.fullmatch(model) or ".." in model or "--" in model:
        raise EvalSettingsError(f"--model {model}: no such file or folder (and not a hub id such as owner/name){hint}")
    if _hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "config.json"), str):
            raise EvalSettingsError(
                f"--model {model}: no such local folder, and HF_HUB_OFFLINE=1 while the hub model {model} is not in "
                f"the Hugging Face cache{hint}"
            )
        return
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # an old huggingface_hub: the loader will tell
        return
    if model in _HUB_MODELS_SEEN:  # validate() runs twice on the command line: ask the hub once
        return
    try:
        HfApi().model_info(model, timeout=15)
        _HUB_MODELS_SEEN.add(model)
    except GatedRepoError:  # exists; loading needs access (HF_TOKEN)
        _HUB_MODELS_SEEN.add(model)
        return
    except RepositoryNotFoundError:
        raise EvalSettingsError(
            f"--model {model}: no such local folder, and the hub has no model {model} (or it is private: set "
            f"HF_TOKEN){hint}"
        ) from None
    except Exception as exc:  # offline, rate-limited: the loader will tell, and nothing is written before it
        logger.warning("could not check --model %s on the hub (%s: %s); continuing", model, type(exc).__name__, exc)


def _close_paths(path: Path) -> str:
    """The "; did you mean ...?" hint naming existing paths that differ from `path` by a typo in its first
    missing part (e.g. runs/dler-1.5b for runs/dlr-1.5b), else ""."""
    import difflib
    import itertools

    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return ""
    rest = path.relative_to(parent).parts
    if not rest:
        return ""
    try:
        names = [c.name for c in itertools.islice(parent.iterdir(), 10_000)]
    except OSError:
        return ""
    close = difflib.get_close_matches(rest[0], names, n=3, cutoff=0.75)
    fixed = [parent.joinpath(name, *rest[1:]) for name in close]
    fixed = [str(f) for f in fixed if f.exists()] or [str(parent / name) for name in close]
    return f"; did you mean {', '.join(fixed)}?" if fixed else ""


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


_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                 "max_sequence_length", "max_seq_length", "seq_len")  # fmt: skip


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


def _seeding(config: EvalConfig, backend=None) -> str:
    """How the samples are seeded: "request", "call" or "engine" (see dler.eval.generate)."""
    if backend is not None:
        seeding = getattr(backend, "seeding", None)
        if seeding:
            return seeding
        return "request" if getattr(backend, "per_request_seed", False) else "call"
    if config.backend == "vllm":
        return "request" if (config.seed_per_request or config.reproducible) else "engine"
    return "call"


def _resume_key(config: EvalConfig, temperature: float, n: int, seeding: str) -> dict[str, Any]:
    return {
        "model": config.model,
        "backend": config.backend,
        "n": n,
        "temperature": temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "seed": config.seed,
        "prompt_template": config.prompt_template,
        # a backend seeded per call (transformers): its chunking is part of the samples
        "chunk_size": config.chunk() if seeding == "call" else None,
        "grader": config.grader,
        "seeding": seeding,
    }


def _has_lines(directory: Path, pattern: str) -> bool:
    return directory.is_dir() and any(f.is_file() and f.stat().st_size > 0 for f in directory.glob(pattern))


def _check_protocol(
    path: Path, key: dict[str, Any], keys: tuple[str, ...], has_samples: bool
) -> dict[str, Any] | None:
    """The protocol already at `path`, after checking that it shares `keys` with `key`. A protocol whose run
    generated nothing (a failed start: a wrong model, out of memory) is replaced rather than enforced."""
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    old_key = old.get("resume_key", {})

    def old_value(k):
        return old_key[k] if k in old_key else _RESUME_DEFAULTS.get(k, lambda o: None)(old_key)

    diff = {k: (old_value(k), key.get(k)) for k in keys if old_value(k) != key.get(k)}
    if not diff:
        return old
    shown = "; ".join(f"{k}: {a!r} there, {b!r} now" + (f" {_RESUME_HINTS[k]}" if k in _RESUME_HINTS else "")
                      for k, (a, b) in diff.items())  # fmt: skip
    if not has_samples:
        logger.warning("%s: replacing the settings of a run that generated nothing (%s)", path, shown)
        return None
    raise ResumeError(
        f"{path.parent} holds a run with different settings ({shown}). Resume it with its own settings, or pass "
        "another --output-dir."
    )


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


class _Progress:
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


class _Lazy:
    """The tokenizer, backend and grader are only built when some problem still needs generating."""

    def __init__(self, config: EvalConfig, backend: Backend | None, tokenizer, grader):
        self.config = config
        self._backend, self._tokenizer, self._grader = backend, tokenizer, grader
        self._own_backend = backend is None
        self._own_grader = grader is None
        self._prompt_ids: dict[tuple[str, int], list[int]] = {}

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self._backend is not None and getattr(self._backend, "tokenizer", None) is not None:
                self._tokenizer = self._backend.tokenizer
            else:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        return self._tokenizer

    def ids_of(self, lb: LoadedBenchmark, p: Problem) -> list[int]:
        """The chat-formatted prompt of a problem, as token ids (computed once)."""
        key = (lb.benchmark.name, p.index)
        if key not in self._prompt_ids:
            text = build_prompt(self.tokenizer, p.problem, self.config.prompt_template)
            self._prompt_ids[key] = prompt_ids(self.tokenizer, text)
        return self._prompt_ids[key]

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
                    seed_per_request=c.seed_per_request or c.reproducible, batch_invariant=c.reproducible,
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


@dataclass
class _Bench:
    """One benchmark in one run directory: its store, the records already there, the problems still to do."""

    loaded: LoadedBenchmark
    store: GenerationStore
    done: dict[int, dict]
    missing: list[Problem]

    @property
    def name(self) -> str:
        return self.loaded.benchmark.name

    def records(self) -> list[dict]:
        return [self.done[p.index] for p in self.loaded.problems]


def _open_bench(loaded: LoadedBenchmark, path: Path, n: int) -> _Bench:
    store = GenerationStore(path)
    done = store.load()
    for p in loaded.problems:
        record = done.get(p.index)
        if record is not None and record.get("digest") != p.digest:
            raise ResumeError(
                f"{store.path}: problem {p.index} differs from the one generated before (the benchmark data changed); "
                "use another --output-dir"
            )
        if record is not None and len(record.get("correct", ())) != n:
            raise ResumeError(f"{store.path}: problem {p.index} has {len(record['correct'])} samples, not {n}")
    return _Bench(loaded, store, done, [p for p in loaded.problems if p.index not in done])


def _record(name: str, p: Problem, seed: int, ids: list[int], samples: list[Sample], grades) -> dict[str, Any]:
    return {
        "benchmark": name,
        "index": p.index,
        "digest": p.digest,
        "seed": seed,
        "prompt_tokens": len(ids),
        "problem": p.problem,
        "gold": _json_value(p.answer),
        "responses": [s.text for s in samples],
        "tokens": [s.tokens for s in samples],
        "truncated": [s.truncated for s in samples],
        "finish_reasons": [s.finish_reason for s in samples],
        "correct": [x.score for x in grades],
        "extracted": [x.answer for x in grades],
        "status": [x.status for x in grades],
    }


class _Writer:
    """Grades finished problems and appends their records (fsync at most every few seconds and at the end)."""

    SYNC_EVERY_S = 5.0

    def __init__(self, config, lazy, settings, on_problem, counter, gen_bar, grade_bar):
        self.config, self.lazy, self.settings, self.on_problem = config, lazy, settings, on_problem
        self.counter, self.gen_bar, self.grade_bar = counter, gen_bar, grade_bar
        self.generated = 0
        self._dirty: set[int] = set()
        self._benches: dict[int, _Bench] = {}
        self._last_sync = time.monotonic()

    def write(self, finished: list[tuple[_Bench, Problem, Request, list[Sample]]]) -> None:
        n = self.settings.n
        for b, p, _, samples in finished:
            if len(samples) != n:
                raise RuntimeError(f"the backend returned {len(samples)} samples for {b.name}[{p.index}], not {n}")
        texts = [s.text for *_, samples in finished for s in samples]
        golds = [p.answer for _, p, _, samples in finished for _ in samples]
        grades = self.lazy.grader.grade(texts, golds)
        self.grade_bar.update(len(grades))
        for j, (b, p, request, samples) in enumerate(finished):
            record = _record(b.name, p, request.seed, request.prompt_ids, samples, grades[j * n : (j + 1) * n])
            b.store.append(record)
            b.done[p.index] = record
            self._benches[id(b)] = b
            self._dirty.add(id(b))
            self.generated += 1
            self.counter.done += 1
            self.gen_bar.update(1)
            if self.on_problem is not None:
                self.on_problem(b.name, p.index)
        if time.monotonic() - self._last_sync >= self.SYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        for key in self._dirty:
            self._benches[key].store.sync()
        self._dirty.clear()
        self._last_sync = time.monotonic()


def _generate_run(
    benches: list[_Bench],
    settings: SamplingSettings,
    config: EvalConfig,
    lazy: _Lazy,
    on_problem: Callable[[str, int], None] | None,
    counter: _Progress,
) -> int:
    """Generate and grade every missing problem of one run directory; returns how many were generated.

    A backend that streams (vLLM) gets every missing problem of every benchmark at once and each is written as it
    finishes; any other backend is called on fixed chunks of `chunk_size` problems per benchmark (a backend seeded
    per call regenerates a whole chunk, so that its samples match an uninterrupted run)."""
    todo = [(b, p) for b in benches for p in b.missing]
    if not todo:
        return 0
    backend = lazy.backend
    label = benches[0].name if len(benches) == 1 else f"{len(benches)} benchmarks"
    gen_bar = _progress(len(todo), f"{label} T={settings.temperature:g} generate", config.progress, 0)
    grade_bar = _progress(len(todo) * settings.n, "grade", config.progress, 1)
    writer = _Writer(config, lazy, settings, on_problem, counter, gen_bar, grade_bar)

    def request(b: _Bench, p: Problem) -> Request:
        return Request(lazy.ids_of(b.loaded, p), derive_seed(config.seed, b.name, p.index))

    try:
        if hasattr(backend, "generate_stream"):
            requests = [request(b, p) for b, p in todo]
            with contextlib.closing(backend.generate_stream(requests, settings)) as stream:
                for batch in stream:
                    writer.write([(*todo[i], requests[i], samples) for i, samples in batch])
        else:
            whole_chunks = _seeding(config, backend) == "call"
            for b in benches:
                missing_ids = {p.index for p in b.missing}
                for chunk in _chunks(b.loaded.problems, config.chunk()):
                    mine = [p for p in chunk if p.index in missing_ids]
                    if not mine:
                        continue
                    batch = chunk if whole_chunks else mine
                    requests = [request(b, p) for p in batch]
                    outputs = backend.generate(requests, settings)
                    if len(outputs) != len(batch):
                        raise RuntimeError(f"the backend returned {len(outputs)} outputs for {len(batch)} prompts")
                    writer.write([(b, p, r, o) for p, r, o in zip(batch, requests, outputs, strict=True)
                                  if p.index in missing_ids])  # fmt: skip
                    writer.sync()
    finally:
        writer.sync()
        for b in benches:
            b.store.close()
        grade_bar.close()
        gen_bar.close()
    return writer.generated


def write_problem_csv(path: Path, records: list[dict]) -> None:
    """`generations/<benchmark>.csv`: one row per problem, in problem order (written whole, atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(M.per_problem_rows(records))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


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


# --------------------------------------------------------------------------------------------- checks before loading


def _backend_name(config: EvalConfig, backend) -> str:
    return getattr(backend, "name", config.backend) if backend is not None else config.backend


def _check_context(config: EvalConfig, backend, longest: tuple[int, str], max_tokens: int) -> None:
    """The longest prompt plus --max-tokens must fit the context: vLLM stops a sequence at max_model_len and
    reports it as finish_reason "length", exactly like the --max-tokens cap, so a short context would silently
    change the protocol. Checked with the tokenizer only, before the model is loaded."""
    tokens, where = longest
    need = tokens + max_tokens
    if _backend_name(config, backend) == "vllm":
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


def _warn_cpu_fallback(config: EvalConfig, backend, samples: int, sequences: int) -> None:
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


def _preflight(
    config: EvalConfig, backend, lazy: _Lazy, benches: list[LoadedBenchmark], samples: int, sequences: int
) -> None:
    """Checks that need the tokenizer (not the model), before anything is written: prompt lengths against the
    context, and the CPU fallback warning."""
    longest = (0, "")
    for lb in benches:
        for p in lb.problems:
            tokens = len(lazy.ids_of(lb, p))
            if tokens > longest[0]:
                longest = (tokens, f"{lb.benchmark.name} problem {p.index}")
    _check_context(config, backend, longest, config.max_tokens)
    _warn_cpu_fallback(config, backend, samples, sequences)


def _with_actual(config: EvalConfig, backend, grader) -> EvalConfig:
    if backend is not None:  # record (and resume-check) the backend actually used
        config = replace(config, backend=getattr(backend, "name", config.backend))
    if grader is not None:  # and the grader actually used
        config = replace(config, grader=getattr(grader, "grader", config.grader))
    if config.data_dir is None and _hub_offline():
        logger.warning("HF_HUB_OFFLINE=1 and no --data-dir: the benchmarks must already be in the datasets cache")
    if config.reproducible and config.backend == "vllm":
        os.environ["VLLM_BATCH_INVARIANT"] = "1"  # before any engine starts (and recorded in the protocol)
    elif config.reproducible or config.seed_per_request:
        logger.info("--reproducible / --seed-per-request apply to vLLM; %s seeds its own way", config.backend)
    return config


def _load_benchmarks(benchmarks: list[Benchmark], config: EvalConfig, grader) -> list[LoadedBenchmark]:
    # golds are checked by the grader passed in (its workers), else in this process by the configured grader
    gold_grader = grader if hasattr(grader, "check_answers") else config.grader
    return [load_benchmark(b, config.data_dir, config.limit, grader=gold_grader) for b in benchmarks]


def _reproducibility(config: EvalConfig, lazy: _Lazy, seeding: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "seeding": seeding,
        "seed": config.seed,
        "reproducible_requested": config.reproducible,
        "VLLM_BATCH_INVARIANT": os.environ.get("VLLM_BATCH_INVARIANT"),
    }
    built = lazy._backend
    if built is not None and hasattr(built, "reproducibility"):
        info.update(built.reproducibility())
    return info


def _command() -> list[str] | None:
    return sys.argv if Path(sys.argv[0]).name in ("dler", "__main__.py", "cli.py") else None


# --------------------------------------------------------------------------------------------- evaluate


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
    with _Progress() as counter, _Session(config, backend, tokenizer, grader) as session:
        config, lazy, loaded, seeding = session.config, session.lazy, session.loaded, session.seeding
        runs = []
        for temperature, run_dir in config.run_dirs():  # every check before anything is written
            n = 1 if temperature == 0 else config.n
            if temperature == 0 and config.n > 1:
                logger.info("temperature 0 is greedy: one sample per problem instead of %d", config.n)
            key = _resume_key(config, temperature, n, seeding)
            has_samples = _has_lines(run_dir / GENERATIONS_DIR, "*.jsonl")
            old = _check_protocol(run_dir / PROTOCOL_FILE, key, RESUME_KEYS, has_samples)
            benches = [_open_bench(lb, run_dir / GENERATIONS_DIR / f"{lb.benchmark.name}.jsonl", n) for lb in loaded]
            runs.append((temperature, run_dir, n, key, old, benches))
        counter.total = sum(len(b.loaded.problems) for *_, benches in runs for b in benches)
        counter.done = sum(len(b.loaded.problems) - len(b.missing) for *_, benches in runs for b in benches)
        need = {b.name: b.loaded for *_, benches in runs for b in benches if b.missing}
        if need:
            samples = sum(n * len(b.missing) for _, _, n, _, _, benches in runs for b in benches)
            _preflight(config, session.backend, lazy, list(need.values()), samples, max(32, config.n))
        out: dict[str, dict[str, Any]] = {}
        for temperature, run_dir, n, key, old, benches in runs:
            settings = SamplingSettings(n, temperature, config.top_p, config.max_tokens)
            out[str(run_dir)] = _run_one(config, lazy, settings, key, old, run_dir, benches, on_problem, counter)
        return out


class _Session:
    """What both modes start with: the settings checked (and the model, unless a backend is given), the
    benchmarks loaded, the lazily built tokenizer/backend/grader (closed at the end)."""

    def __init__(self, config: EvalConfig, backend, tokenizer, grader):
        self._args = (config, backend, tokenizer, grader)
        self.lazy: _Lazy | None = None

    def __enter__(self):
        config, backend, tokenizer, grader = self._args
        benchmarks = config.validate(check_model=backend is None)
        self.config = _with_actual(config, backend, grader)
        self.backend = backend
        self.loaded = _load_benchmarks(benchmarks, self.config, grader)
        self.lazy = _Lazy(self.config, backend, tokenizer, grader)
        self.seeding = _seeding(self.config, backend)
        return self

    def __exit__(self, *exc):
        if self.lazy is not None:
            self.lazy.close()
        return False


def _run_one(config, lazy, settings, key, old, run_dir, benches, on_problem, counter) -> dict[str, Any]:
    temperature, n = settings.temperature, settings.n
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
        "chunk_size": None if config.backend == "vllm" else config.chunk(),  # vLLM: every problem at once
        "grader": _describe_grader(lazy.grader),
        "resume_key": key,
        "reproducibility": _reproducibility(config, lazy, key["seeding"]),
        "config": {k: v for k, v in asdict(config).items() if k != "progress"},
        "command": _command(),
        "sessions": (old or {}).get("sessions", []) + [{"started": _now()}],
    }
    _write_json(run_dir / PROTOCOL_FILE, protocol)
    generated = _generate_run(benches, settings, config, lazy, on_problem, counter)
    per_benchmark: dict[str, dict[str, Any]] = {}
    sources: dict[str, Any] = {}
    for b in benches:
        records = b.records()
        if not records:
            raise BenchmarkError(f"benchmark {b.name} has no problems")
        write_problem_csv(run_dir / GENERATIONS_DIR / f"{b.name}.csv", records)
        summary = M.summarize(records)
        summary["grading"] = dict(Counter(s for r in records for s in r["status"]))
        invalid = summary["grading"].get("invalid_gold", 0)
        if invalid:
            logger.warning("%s: %d samples scored 0 because their gold answer cannot be parsed", b.name, invalid)
        per_benchmark[b.name] = summary
        sources[b.name] = b.loaded.source
    protocol["reproducibility"] = _reproducibility(config, lazy, key["seeding"])
    protocol["sessions"][-1].update({"finished": _now(), "problems_generated": generated,
                                     "reproducibility": protocol["reproducibility"]})  # fmt: skip
    if lazy.backend_info is not None:
        protocol["backend_info"] = lazy.backend_info
    protocol["benchmarks"] = sources
    protocol["limit"] = config.limit
    protocol["versions"] = versions()
    protocol["hardware"] = hardware()
    _write_json(run_dir / PROTOCOL_FILE, protocol)
    results = {"protocol": protocol, "benchmarks": per_benchmark, "overall": M.overall(per_benchmark)}
    _write_json(run_dir / RESULTS_FILE, results)
    return results


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


# --------------------------------------------------------------------------------------------- test-time scaling

# what a resumed scaling run must share with the questions already timed: everything that changes the samples
# or the wall time of generating them
SCALING_RESUME_KEYS = (
    "model", "backend", "temperature", "top_p", "max_tokens", "seed", "prompt_template", "grader", "seeding",
    "reproducible", "tensor_parallel_size", "max_model_len", "gpu_memory_utilization", "dtype", "enforce_eager",
    "gpus",
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
    }


def _scaling_results(config: EvalConfig, cells: dict[tuple[int, str], _Bench], protocol: dict) -> dict[str, Any]:
    """scaling.json: for every benchmark, one entry per K whose questions are all done (in K order)."""
    benchmarks: dict[str, list[dict[str, Any]]] = {}
    for (k, name), b in sorted(cells.items()):
        entries = benchmarks.setdefault(name, [])
        if not b.missing and b.loaded.problems:
            entries.append(scaling_entry(b.records(), k))
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
    with _Progress() as counter, _Session(config, backend, tokenizer, grader) as session:
        return _scaling(session, on_problem, counter)


def _scaling(session: _Session, on_problem, counter: _Progress) -> dict[str, Any]:
    config, lazy, loaded, seeding = session.config, session.lazy, session.loaded, session.seeding
    temperature, ks = config.temperatures[0], list(config.parallel_k)
    root = Path(config.output_dir)
    sdir = root / SCALING_DIR
    key = _scaling_key(config, seeding)
    old = _check_protocol(sdir / PROTOCOL_FILE, key, SCALING_RESUME_KEYS, _has_lines(sdir, "*.jsonl"))
    cells = {(k, lb.benchmark.name): _open_bench(lb, sdir / f"{lb.benchmark.name}.k{k}.jsonl", k)
             for k in ks for lb in loaded}  # fmt: skip
    counter.total = sum(len(b.loaded.problems) for b in cells.values())
    counter.done = sum(len(b.loaded.problems) - len(b.missing) for b in cells.values())
    need = {b.name: b.loaded for b in cells.values() if b.missing}
    if need:
        samples = sum(k * len(b.missing) for (k, _), b in cells.items())
        _preflight(config, session.backend, lazy, list(need.values()), samples, max(ks))
    sdir.mkdir(parents=True, exist_ok=True)
    protocol = {
        **_model_record(config.model),
        "backend": config.backend,
        "mode": "test-time scaling: one request with n=K per question, questions one at a time",
        "sampling": {
            "ks": ks,
            "temperature": temperature,
            "top_p": config.top_p,
            "top_k": None,
            "max_tokens": config.max_tokens,
            "seed": config.seed,
            "greedy": False,
        },
        "prompt_template": config.prompt_template,
        "chat_template": True,
        "grader": _describe_grader(lazy.grader),
        "pass_at_k": "fraction of questions with at least one correct sample among exactly K; se over questions",
        "latency": LATENCY_DEFINITION,
        "resume_key": key,
        "reproducibility": _reproducibility(config, lazy, seeding),
        "config": {k: v for k, v in asdict(config).items() if k != "progress"},
        "command": _command(),
        "sessions": (old or {}).get("sessions", []) + [{"started": _now()}],
    }
    _write_json(sdir / PROTOCOL_FILE, protocol)
    entry = protocol["sessions"][-1]
    generated = 0
    if need:
        first = next(b for b in cells.values() if b.missing)
        warm = Request(lazy.ids_of(first.loaded, first.missing[0]), config.seed)
        start = time.perf_counter()
        lazy.backend.generate([warm], SamplingSettings(1, temperature, config.top_p, min(16, config.max_tokens)))
        entry["warmup_s"] = round(time.perf_counter() - start, 3)
    for k in ks:
        settings = SamplingSettings(k, temperature, config.top_p, config.max_tokens)
        for lb in loaded:
            b = cells[(k, lb.benchmark.name)]
            if not b.missing:
                continue
            bar = _progress(len(b.missing), f"{b.name} K={k}", config.progress, 0)
            try:
                for p in list(b.missing):
                    request = Request(lazy.ids_of(lb, p), derive_seed(config.seed, f"{b.name}@k{k}", p.index))
                    start = time.perf_counter()
                    (samples,) = lazy.backend.generate([request], settings)
                    latency = time.perf_counter() - start
                    if len(samples) != k:
                        raise RuntimeError(f"the backend returned {len(samples)} samples for K={k}")
                    grades = lazy.grader.grade([s.text for s in samples], [p.answer] * k)
                    record = _record(b.name, p, request.seed, request.prompt_ids, samples, grades)
                    record = {"k": k, "latency_s": latency, **record}
                    b.store.append(record)
                    b.store.sync()
                    b.done[p.index] = record
                    b.missing.remove(p)
                    generated += 1
                    counter.done += 1
                    bar.update(1)
                    if on_problem is not None:
                        on_problem(b.name, p.index)
            finally:
                b.store.close()
                bar.close()
        _write_json(root / SCALING_FILE, _scaling_results(config, cells, protocol))
    entry.update({"finished": _now(), "questions_timed": generated})
    protocol["reproducibility"] = _reproducibility(config, lazy, seeding)
    entry["reproducibility"] = protocol["reproducibility"]
    if lazy.backend_info is not None:
        protocol["backend_info"] = lazy.backend_info
    protocol["benchmarks"] = {lb.benchmark.name: lb.source for lb in loaded}
    protocol["limit"] = config.limit
    protocol["versions"] = versions()
    protocol["hardware"] = {**hardware(), "gpus": key["gpus"]}
    _write_json(sdir / PROTOCOL_FILE, protocol)
    results = _scaling_results(config, cells, protocol)
    _write_json(root / SCALING_FILE, results)
    return results


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
