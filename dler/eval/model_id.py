"""Whether a model flag (`dler eval --model`, a recipe's `--model_name_or_path`, `dler merge --base/--tuned`) names a
model that exists: a local folder or file, or a hub id (in the cache when offline, else on the hub). Checked before
anything is written or any model or data is loaded. Without network, the hub is found unreachable once per process
by a bounded probe (`hub_reachable`), so a hub id fails in seconds with the offline switch named, instead of after
the hub client's retries."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from dler.eval.errors import EvalSettingsError

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_HUB_MODELS_SEEN: set[str] = set()
PROBE_TIMEOUT_S = 3.0  # a hub that does not answer a TCP connect within this is taken as unreachable
_PROBED: dict[tuple[str, int], bool] = {}  # (host, port) -> reachable: each probed once per process


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_endpoint() -> str:
    """The hub the Hugging Face clients talk to (HF_ENDPOINT, else huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _probe_address(endpoint: str) -> tuple[str, int]:
    """Where a connection to `endpoint` goes first: the HTTP(S) proxy the clients would use, else the hub itself."""
    import urllib.request

    url = urlsplit(endpoint)
    host, https = url.hostname or "huggingface.co", url.scheme != "http"
    proxy = urllib.request.getproxies().get("https" if https else "http")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or host, p.port or (443 if p.scheme == "https" else 80)
    return host, url.port or (443 if https else 80)


def _connects(address: tuple[str, int], timeout: float) -> bool:
    """Whether a TCP connection to `address` opens within `timeout` seconds, name lookup included (a thread:
    getaddrinfo has no timeout of its own)."""
    result: list[bool] = []

    def attempt():
        try:
            socket.create_connection(address, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True, name="dler-hub-probe")
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the hub (or the proxy to it) accepts a connection: probed once per process, in `timeout` seconds
    at most."""
    address = _probe_address(hub_endpoint())
    if address not in _PROBED:
        _PROBED[address] = _connects(address, timeout)
        if not _PROBED[address]:
            logger.debug("the hub %s (%s:%d) cannot be reached", hub_endpoint(), *address)
    return _PROBED[address]


def no_network_message(model: str, flag: str, cached: bool) -> str:
    """The one line for a hub id while the hub cannot be reached: the id, and the two ways to run offline."""
    fix = (
        "the model is in the Hugging Face cache: rerun with HF_HUB_OFFLINE=1 to use it"
        if cached
        else "set HF_HUB_OFFLINE=1 with the model already in the Hugging Face cache, or give a local model folder"
    )
    return (
        f"{flag} {model}: no such local folder, and the hub ({hub_endpoint()}) cannot be reached (no network?): {fix}"
    )


def hub_unreachable() -> str | None:
    """Why the hub cannot be asked now ("the hub (URL) cannot be reached (no network?)"), or None: it is reachable,
    or HF_HUB_OFFLINE=1 sends every read to the cache."""
    if hub_offline() or hub_reachable():
        return None
    return f"the hub ({hub_endpoint()}) cannot be reached (no network?)"


def _cached(model: str) -> bool:
    """Whether the hub model `model` has its config.json in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "config.json"), str)


def check_model_id(model: str) -> None:
    """`--model` is an existing local model (a folder with config.json, or a file) or a hub id that exists (in
    the local cache when HF_HUB_OFFLINE=1, else on the hub). Raises EvalSettingsError naming what is wrong."""
    problem = model_problem(model, "--model")
    if problem:
        raise EvalSettingsError(problem)


def model_problem(model: str, flag: str = "--model", adapters: bool = False) -> str | None:
    """What is wrong with the model `flag` names, as one line with the fix, or None: a local folder holding a model
    (config.json, or adapter_config.json with `adapters`) or a file, else a hub id in the cache (HF_HUB_OFFLINE=1)
    or on a reachable hub. A typo gets "did you mean" naming close local paths or cached hub models."""
    if not model or not model.strip():
        return f"{flag} is empty"
    path = Path(model).expanduser()
    if path.exists():
        marks = ("config.json", "adapter_config.json") if adapters else ("config.json",)
        if path.is_dir() and not any((path / m).is_file() for m in marks):
            return f"{flag} {model}: the folder has no {' or '.join(marks)}, so it is not a model folder"
        return None
    hint = _close_paths(path)
    local_looking = model.startswith(("/", "./", "../", "~", ".\\")) or model.count("/") > 1 or "\\" in model
    if local_looking or not _HUB_ID.fullmatch(model) or ".." in model or "--" in model:
        return f"{flag} {model}: no such file or folder (and not a hub id such as owner/name){hint}"
    if hub_offline():
        if _cached(model):
            return None
        return (
            f"{flag} {model}: no such local folder, and HF_HUB_OFFLINE=1 while the hub model {model} is not in "
            f"the Hugging Face cache{hint or _close_cached(model)}"
        )
    if model in _HUB_MODELS_SEEN:  # validate() runs twice on the command line: ask the hub once
        return None
    if not hub_reachable():
        return no_network_message(model, flag, _cached(model)) + hint
    return _ask_hub(model, flag, hint)


def _ask_hub(model: str, flag: str, hint: str) -> str | None:
    """Whether the reachable hub has the model `model` (gated counts as existing: loading needs HF_TOKEN)."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # an old huggingface_hub: the loader will tell
        return None
    try:
        HfApi().model_info(model, timeout=15)
        _HUB_MODELS_SEEN.add(model)
    except GatedRepoError:  # exists; loading needs access (HF_TOKEN)
        _HUB_MODELS_SEEN.add(model)
    except RepositoryNotFoundError:
        return (
            f"{flag} {model}: no such local folder, and the hub has no model {model} (or it is private: set "
            f"HF_TOKEN){hint or _close_cached(model)}"
        )
    except Exception as exc:  # rate-limited, a proxy error: the loader will tell, and nothing is written before it
        logger.warning("could not check %s %s on the hub (%s: %s); continuing", flag, model, type(exc).__name__, exc)
    return None


def _close_cached(model: str) -> str:
    """The "; did you mean ...?" hint naming hub models in the local cache whose id is close to `model`, else ""."""
    import difflib

    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ids = [p.name[len("models--") :].replace("--", "/") for p in Path(HF_HUB_CACHE).glob("models--*")]
    except (ImportError, OSError):
        return ""
    close = difflib.get_close_matches(model, ids, n=3, cutoff=0.8)
    return f"; did you mean {', '.join(close)} (in the cache)?" if close else ""


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
