"""protocol.json: how a run's numbers were made (settings, grader, seeding, versions, hardware, sessions), and the
resume key a rerun must share with it before it may add to the generations already written."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dler.eval.errors import EvalSettingsError, ResumeError
from dler.eval.store import PROTOCOL_FILE, write_json
from dler.prompts import R1_PROMPT_TEMPLATE, prompt_settings, resolve

if TYPE_CHECKING:
    from dler.eval.session import Session
    from dler.eval.settings import EvalConfig

logger = logging.getLogger(__name__)

# settings a resumed run must share with the lines already written
RESUME_KEYS = (
    "model", "backend", "n", "temperature", "top_p", "max_tokens", "seed", "prompt_template", "chunk_size", "grader",
    "seeding", "prompt",
)  # fmt: skip
# the value of a resume key in runs written before the key existed (from the old key)
_RESUME_DEFAULTS: dict[str, Callable[[dict], Any]] = {
    "grader": lambda old: "dler",
    # the r1 format in the chat template, graded after </think>, with the user message the run recorded
    "prompt": lambda old: prompt_settings(resolve("r1", user=old.get("prompt_template") or R1_PROMPT_TEMPLATE)),
    # vLLM runs seeded every request before the engine-seeded default; transformers seeds each call
    "seeding": lambda old: {"vllm": "request", "transformers": "call"}.get(old.get("backend")),
}
_RESUME_HINTS = {
    "prompt": "(--prompt-format, --prompt-template, --system-prompt, --[no-]chat-template, --chat-template-kwargs, "
    "--answer-region; docs/prompts.md)",
    "seeding": "(--seed-per-request or --reproducible give 'request' with vLLM; without them vLLM seeds the engine)",
}
# the order of a protocol's keys, for both modes (each uses some); what a finished session adds comes after
_ORDER = ("model", "model_path", "model_config_sha256", "backend", "mode", "sampling", "prompt_template",
          "chat_template", "prompt", "prompt_example", "chunk_size", "grader", "pass_at_k", "latency", "resume_key",
          "reproducibility", "config", "command", "sessions")  # fmt: skip


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


def resume_key(config: EvalConfig, temperature: float, n: int, seeding: str) -> dict[str, Any]:
    """The settings of one run directory that its generations depend on (`RESUME_KEYS`)."""
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
        "prompt": prompt_settings(config.prompt()),
    }


def check_protocol(path: Path, key: dict[str, Any], keys: tuple[str, ...], has_samples: bool) -> dict[str, Any] | None:
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


def describe_grader(grader) -> dict[str, Any]:
    """What graded the samples, from the grader object itself (a custom grader is named by its type)."""
    describe = getattr(grader, "describe", None)
    if callable(describe):
        return describe()
    return {
        "reward": f"{type(grader).__module__}.{type(grader).__qualname__}",
        "grader": getattr(grader, "grader", None),
    }


def reproducibility(config: EvalConfig, backend, seeding: str) -> dict[str, Any]:
    """How far the samples can be reproduced: the seeding, and what the backend (None: not built yet) reports."""
    info: dict[str, Any] = {
        "seeding": seeding,
        "seed": config.seed,
        "reproducible_requested": config.reproducible,
        "VLLM_BATCH_INVARIANT": os.environ.get("VLLM_BATCH_INVARIANT"),
    }
    if backend is not None and hasattr(backend, "reproducibility"):
        info.update(backend.reproducibility())
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


def _command() -> list[str] | None:
    """The command line, when this runs from `dler` (not from a caller's own script)."""
    return sys.argv if Path(sys.argv[0]).name in ("dler", "__main__.py", "cli.py") else None


def prompt_example(session: Session, old: dict[str, Any] | None) -> dict[str, Any] | None:
    """The exact prompt of the first problem evaluated (its benchmark, index and text), as the model sees it: from
    `old`, the protocol of the same run, when it holds it; else rendered (with the tokenizer). None, with a warning,
    when the tokenizer cannot be loaded (a finished run whose results are recomputed)."""
    if old and old.get("prompt_example"):
        return old["prompt_example"]
    lb = next((lb for lb in session.loaded if lb.problems), None)
    if lb is None:
        return None
    try:
        text = session.text_of(lb, lb.problems[0])
    except EvalSettingsError:
        raise
    except Exception as exc:  # the record must not cost the results
        logger.warning("could not render the prompt of %s[0] for protocol.json: %s", lb.benchmark.name, exc)
        return None
    return {"benchmark": lb.benchmark.name, "index": lb.problems[0].index, "text": text}


def start_protocol(
    directory: Path, session: Session, key: dict[str, Any], old: dict[str, Any] | None, **fields
) -> dict[str, Any]:
    """Write `directory/protocol.json` for a session about to generate, continuing the sessions of `old`, and
    return it. `fields` are the mode's own keys (sampling, and chunk_size or mode, pass_at_k, latency)."""
    config = session.config
    protocol = {
        **_model_record(config.model),
        "backend": config.backend,
        "prompt_template": config.prompt_template,
        "chat_template": config.chat_template,
        "prompt": prompt_settings(session.prompt),
        "prompt_example": prompt_example(session, old),
        "grader": describe_grader(session.grader),
        "resume_key": key,
        "reproducibility": reproducibility(config, session.built_backend, key["seeding"]),
        "config": {k: v for k, v in asdict(config).items() if k != "progress"},
        "command": _command(),
        "sessions": (old or {}).get("sessions", []) + [{"started": _now()}],
        **fields,
    }
    protocol = {k: protocol[k] for k in sorted(protocol, key=_ORDER.index)}
    write_json(directory / PROTOCOL_FILE, protocol)
    return protocol


def finish_protocol(
    directory: Path,
    protocol: dict[str, Any],
    session: Session,
    counts: dict[str, int],
    sources: dict[str, Any],
    gpus: list[str] | None = None,
) -> None:
    """Complete the protocol of a finished session with what is known only now, and write it: `counts`, what
    the session generated; `sources`, where each benchmark's rows came from; `gpus`, the GPUs it was timed on."""
    config = session.config
    info = reproducibility(config, session.built_backend, protocol["resume_key"]["seeding"])
    protocol["reproducibility"] = info
    protocol["sessions"][-1].update({"finished": _now(), **counts, "reproducibility": info})
    if session.backend_info is not None:
        protocol["backend_info"] = session.backend_info
    protocol["benchmarks"] = sources
    protocol["limit"] = config.limit
    protocol["versions"] = versions()
    protocol["hardware"] = hardware()
    if gpus is not None:
        protocol["hardware"]["gpus"] = gpus
    write_json(directory / PROTOCOL_FILE, protocol)
