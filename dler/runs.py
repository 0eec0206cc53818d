"""A training run's life in its `output_dir`: one run at a time, checkpoints that are whole, resumes that say so.

Every checkpoint ends with a manifest, `dler_complete.json`, written last and atomically (a temporary name, then a
rename) once every rank has finished writing: it lists each file with its size. A restart resumes from the newest
checkpoint whose manifest matches what is on disk, and says which checkpoints it passed over and why. `dler_run.json`
records the settings that define the objective, so a restart with other settings is refused (naming them), and
whether the run finished, so running a finished run again trains nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import sys

logger = logging.getLogger(__name__)

MANIFEST = "dler_complete.json"
RUN_FILE = "dler_run.json"
LOCK_FILE = "dler.lock"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def write_json_atomically(path: str, payload: dict) -> None:
    """Write `payload` to `path` so that a reader sees the old file or the whole new one, never a part."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(folder: str, step: int) -> None:
    """Mark `folder` as a whole checkpoint: every file in it with its size. Call once all ranks have written."""
    files = {
        os.path.relpath(os.path.join(root, name), folder): os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
        if name != MANIFEST and ".tmp-" not in name
    }
    write_json_atomically(os.path.join(folder, MANIFEST), {"step": step, "files": files})


def checkpoint_problem(folder: str) -> str | None:
    """Why `folder` cannot be resumed from (None when it is whole)."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        return f"no {MANIFEST}: the save did not finish"
    try:
        with open(path) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError) as error:
        return f"unreadable {MANIFEST} ({error})"
    for name, size in files.items():
        file = os.path.join(folder, name)
        if not os.path.exists(file):
            return f"{name} is missing"
        if os.path.getsize(file) != size:
            return f"{name} has {os.path.getsize(file)} bytes, {size} were written"
    return None


def find_resume_checkpoint(output_dir: str) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest whole checkpoint in `output_dir` (None if there is none), and the newer ones passed over, with why."""
    if not os.path.isdir(output_dir):
        return None, []
    steps = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))), reverse=True
    )
    skipped = []
    for _, name in steps:
        folder = os.path.join(output_dir, name)
        if not os.path.isdir(folder):
            continue
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append((name, problem))
    return None, skipped


def settings_differences(saved: dict, current: dict) -> list[str]:
    """'name: saved -> current' for every setting whose value changed (settings new on either side included)."""
    names = sorted(set(saved) | set(current))
    missing = "(unset)"
    return [
        f"{name}: {saved.get(name, missing)!r} -> {current.get(name, missing)!r}"
        for name in names
        if json.dumps(saved.get(name, missing), default=str) != json.dumps(current.get(name, missing), default=str)
    ]


def read_run(output_dir: str) -> dict | None:
    path = os.path.join(output_dir, RUN_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


class RunLock:
    """An exclusive lock on `output_dir`, held while a run uses it and released by the OS if the process dies, so a
    requeued job never meets a stale lock. Raises naming the holder when another process has it.

    A run that fails before it calls `keep()` (bad data, a model that does not load) leaves nothing behind: the
    folders the lock created are removed, or in a folder that was there before, the lock file it created."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self._file = None
        self._kept = False
        self._created_dir = self._created_file = None

    def keep(self) -> None:
        """From now on, what is in `output_dir` is the run's: kept even if the run fails."""
        self._kept = True

    def __enter__(self) -> RunLock:
        folder = os.path.abspath(os.path.dirname(self.path))
        top = folder  # the outermost folder this lock creates, if any
        while not os.path.exists(os.path.dirname(top)) and os.path.dirname(top) != top:
            top = os.path.dirname(top)
        self._created_dir = None if os.path.exists(folder) else top
        self._created_file = None if os.path.exists(self.path) else self.path
        os.makedirs(folder, exist_ok=True)
        self._file = open(self.path, "a+")  # noqa: SIM115 - held for the run's lifetime
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise RuntimeError(
                f"output_dir {os.path.dirname(self.path)} is in use by {holder}: two runs would interleave their "
                "checkpoints. Wait for it to finish, stop it, or choose another --output_dir."
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        self._file.flush()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and not self._kept and self._file is not None:
            self._discard()
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def _discard(self) -> None:
        """Remove what this lock created (while still holding it, so no other run is using the folder)."""
        if self._created_dir is not None:
            shutil.rmtree(self._created_dir, ignore_errors=True)
        elif self._created_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._created_file)


def leave_process_group() -> None:
    """Destroy the default process group if there is one. A rank that exits with its communication threads still
    running dies with SIGABRT ("terminate called without an active exception") after a good run, and the launcher
    reports the run as failed."""
    from datetime import timedelta

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo":  # leave together: a rank that closes its sockets first aborts the others
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        except RuntimeError as error:  # another rank is gone already: nothing to wait for
            logger.warning("Leaving the process group without the other ranks: %s", str(error).splitlines()[0])
    dist.destroy_process_group()


_crashed = False


def leave_process_group_at_exit() -> None:
    """At interpreter exit, leave the process group with the other ranks (once per process). After an uncaught
    exception it does not wait for them: they may be blocked in a collective, and the launcher stops them."""
    if getattr(leave_process_group_at_exit, "done", False):
        return
    leave_process_group_at_exit.done = True
    previous_hook = sys.excepthook

    def note_crash(*exc_info):
        global _crashed
        _crashed = True
        previous_hook(*exc_info)

    sys.excepthook = note_crash
    atexit.register(lambda: None if _crashed else leave_process_group())
