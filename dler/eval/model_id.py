"""Whether `--model` names a model that exists: a local folder or file, or a hub id (in the cache when offline, else
on the hub). Checked before anything is written or any model is loaded."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from dler.eval.errors import EvalSettingsError

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_HUB_MODELS_SEEN: set[str] = set()


def hub_offline() -> bool:
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
    if hub_offline():
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
