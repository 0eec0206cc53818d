"""What an evaluation writes, and how a rerun reads it back to resume.

Layout of a run directory (one per temperature; a sweep writes `DIR/t0/`, `DIR/t0.6/`, ...):

    protocol.json                  settings that must not change on resume, sessions, versions
    generations/<benchmark>.jsonl  one line per problem: its n responses, token counts, truncation, grades
    generations/<benchmark>.csv    one row per problem: samples, correct, mean correctness, mean length, truncated
    results.json                   protocol + metrics per benchmark and overall

The test-time scaling mode adds to the output directory:

    scaling/protocol.json          its settings (a resume must share them), sessions
    scaling/<benchmark>.k<K>.jsonl one line per question: its K responses, grades and wall-clock latency
    scaling.json                   Pass@K and latency per benchmark and K
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dler.eval.errors import ResumeError
from dler.eval.metrics import PER_PROBLEM_COLUMNS, per_problem_rows

if TYPE_CHECKING:
    from dler.eval.benchmarks import LoadedBenchmark, Problem
    from dler.eval.generate import Request, Sample
    from dler.rewards.reward import Grade

logger = logging.getLogger(__name__)

PROTOCOL_FILE = "protocol.json"
RESULTS_FILE = "results.json"
GENERATIONS_DIR = "generations"
SCALING_FILE = "scaling.json"
SCALING_DIR = "scaling"


def write_json(path: Path, data: dict) -> None:
    """Write `data` whole or not at all (a temporary file, then a rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_problem_csv(path: Path, records: list[dict]) -> None:
    """`generations/<benchmark>.csv`: one row per problem, in problem order (written whole, atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PER_PROBLEM_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(per_problem_rows(records))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def has_lines(directory: Path, pattern: str) -> bool:
    """Whether some non-empty file in `directory` matches `pattern` (a run there generated something)."""
    return directory.is_dir() and any(f.is_file() and f.stat().st_size > 0 for f in directory.glob(pattern))


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


@dataclass(frozen=True)
class ProblemRecord:
    """One problem's line of generations: the problem, the request sent for it, its samples and their grades."""

    benchmark: str
    problem: Problem
    request: Request
    samples: list[Sample]
    grades: list[Grade]

    def to_json(self) -> dict[str, Any]:
        """The line as stored, with the keys in the order every run has written them."""
        p = self.problem
        return {
            "benchmark": self.benchmark,
            "index": p.index,
            "digest": p.digest,
            "seed": self.request.seed,
            "prompt_tokens": len(self.request.prompt_ids),
            "problem": p.problem,
            "gold": _json_value(p.answer),
            "responses": [s.text for s in self.samples],
            "tokens": [s.tokens for s in self.samples],
            "truncated": [s.truncated for s in self.samples],
            "finish_reasons": [s.finish_reason for s in self.samples],
            "correct": [g.score for g in self.grades],
            "extracted": [g.answer for g in self.grades],
            "status": [g.status for g in self.grades],
        }


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


@dataclass(eq=False)
class Generations:
    """One benchmark's generations in one run directory, `n` samples per problem: its store, the records there
    (by problem index) and, from them, the problems still to do."""

    loaded: LoadedBenchmark
    store: GenerationStore
    n: int
    done: dict[int, dict]

    @classmethod
    def open(cls, loaded: LoadedBenchmark, path: Path, n: int) -> Generations:
        """The generations at `path`, after checking that they were made from these problems with n samples."""
        store = GenerationStore(path)
        done = store.load()
        for p in loaded.problems:
            record = done.get(p.index)
            if record is not None and record.get("digest") != p.digest:
                raise ResumeError(
                    f"{store.path}: problem {p.index} differs from the one generated before (the benchmark data "
                    "changed); use another --output-dir"
                )
            if record is not None and len(record.get("correct", ())) != n:
                raise ResumeError(f"{store.path}: problem {p.index} has {len(record['correct'])} samples, not {n}")
        return cls(loaded, store, n, done)

    @property
    def name(self) -> str:
        return self.loaded.benchmark.name

    @property
    def missing(self) -> list[Problem]:
        return [p for p in self.loaded.problems if p.index not in self.done]

    def records(self) -> list[dict]:
        return [self.done[p.index] for p in self.loaded.problems]

    def add(self, record: dict) -> None:
        """Append a problem's record (flushed, not yet fsynced) and count the problem done."""
        self.store.append(record)
        self.done[record["index"]] = record
