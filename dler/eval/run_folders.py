"""Finished evaluation runs as `dler report` reads them: a folder's results.json, scaling.json and per-problem
generations, found from run folders or sweep folders and labelled by their shortest distinct path.

Fields added to results.json over time (`pass@1_se`, `budget_curve`, `length_histogram`, ...) are optional: an
older run is reported without error bars or without the plot that needs them.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dler.eval.benchmarks import BENCHMARKS
from dler.eval.graded import combined_se
from dler.eval.store import GENERATIONS_DIR, PROTOCOL_FILE, RESULTS_FILE, SCALING_FILE


@dataclass(eq=False)
class Run:
    """One run folder: its results.json and scaling.json (either may be missing, not both), labelled for tables
    and legends; per-problem correctness is read from generations/ when first asked for."""

    path: Path
    label: str
    results: dict[str, Any] | None
    scaling: dict[str, Any] | None = None
    _per_problem: dict[str, dict[int, tuple[int, float]] | None] = field(default_factory=dict, repr=False)

    @property
    def benchmarks(self) -> dict[str, dict[str, Any]]:
        return self.results["benchmarks"] if self.results else {}

    @property
    def protocol(self) -> dict[str, Any]:
        if self.results:
            return self.results.get("protocol", {})
        return (self.scaling or {}).get("protocol") or {}

    @property
    def sampling(self) -> dict[str, Any]:
        return self.protocol.get("sampling", {})

    @property
    def temperature(self) -> float | None:
        return protocol_temperature(self.protocol)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def model(self) -> str:
        return self.protocol.get("model") or (self.scaling or {}).get("model") or "?"

    def avg(self, key: str, names: list[str]) -> float | None:
        values = [
            self.benchmarks[b][key] for b in names if b in self.benchmarks and self.benchmarks[b].get(key) is not None
        ]
        return sum(values) / len(values) if values else None

    def avg_se(self, key: str, names: list[str]) -> float | None:
        """Standard error of the mean of `key` over the benchmarks this run has (independent benchmarks):
        sqrt(sum se^2) / B. None when one of them has no `<key>_se`."""
        return combined_se([self.benchmarks[b].get(f"{key}_se") for b in names if b in self.benchmarks])

    def per_problem(self, benchmark: str) -> dict[int, tuple[int, float]] | None:
        """{problem index: (samples, mean correctness)} from `generations/<benchmark>.csv`, else from the JSONL
        generations; None when the run folder holds neither."""
        if benchmark not in self._per_problem:
            self._per_problem[benchmark] = _read_per_problem(self.path / GENERATIONS_DIR, benchmark)
        return self._per_problem[benchmark]


class ReportError(ValueError):
    """A run folder `dler report` cannot read; the CLI prints it as a usage error."""


def _load(path: Path, name: str) -> dict[str, Any] | None:
    if not (path / name).is_file():
        return None
    try:
        return json.loads((path / name).read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path / name} is not valid JSON: {exc}") from None


def _is_run(path: Path) -> bool:
    return (path / RESULTS_FILE).is_file() or (path / SCALING_FILE).is_file()


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Runs from directories holding results.json (or scaling.json), or sweep folders whose `t<T>/` subfolders
    hold one each."""
    found: list[Path] = []
    for p in map(Path, paths):
        if _is_run(p):
            found.append(p)
            continue
        children = sorted((c for c in p.glob("*/") if _is_run(c)), key=lambda c: (_temperature_of(c), c.name))
        if not children:
            hint = (
                " (an unfinished run has protocol.json but no results.json yet)"
                if (p / PROTOCOL_FILE).is_file()
                else ""
            )
            raise ReportError(f"{p} holds no {RESULTS_FILE} (or {SCALING_FILE}), nor subfolders with one{hint}")
        found.extend(children)
    runs, seen = [], set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            runs.append(Run(p, "", _load(p, RESULTS_FILE), _load(p, SCALING_FILE)))
    label_runs(runs)
    return runs


def _temperature_of(path: Path) -> float:
    for name in (RESULTS_FILE, SCALING_FILE):
        try:
            protocol = json.loads((path / name).read_text())["protocol"]
            return float(protocol.get("sampling", protocol)["temperature"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return math.inf


def label_runs(runs: list[Run]) -> None:
    """Shortest distinct path suffixes: `dler-7b`, or `sweep/t0.6` for a sweep's subfolders."""
    depth = 1
    while True:
        labels = ["/".join(r.path.resolve().parts[-depth:]) for r in runs]
        if len(set(labels)) == len(labels) or depth > 8:
            break
        depth += 1
    for r, label in zip(runs, labels, strict=True):
        if depth == 1 and r.path.name.startswith("t") and _looks_like_temperature(r.path.name):
            label = "/".join(r.path.resolve().parts[-2:])
        r.label = label


def _looks_like_temperature(name: str) -> bool:
    try:
        float(name[1:])
        return True
    except ValueError:
        return False


def display_name(r: Run, baseline: Run | None = None) -> str:
    """A run's name in tables and legends: its label, marked when it is the baseline or decoded greedily."""
    name = r.label
    if r.greedy:
        name += " (T=0, greedy)"
    if baseline is not None and r is baseline:
        name += " (baseline)"
    return name


def _read_per_problem(folder: Path, benchmark: str) -> dict[int, tuple[int, float]] | None:
    path = folder / f"{benchmark}.csv"
    if path.is_file():
        out: dict[int, tuple[int, float]] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                samples = int(float(row.get("samples") or 0))
                if row.get("mean_correct") not in (None, ""):
                    mean = float(row["mean_correct"])
                elif samples:
                    mean = float(row["correct"]) / samples
                else:
                    continue
                out[int(row["index"])] = (samples, mean)
        return out
    path = folder / f"{benchmark}.jsonl"
    if path.is_file():  # runs written before the CSV existed: the correctness lists of the JSONL generations
        out = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    scores = [float(x) >= 0.5 for x in record["correct"]]
                    out[int(record["index"])] = (len(scores), sum(scores) / len(scores))
                except (ValueError, KeyError, TypeError, ZeroDivisionError):
                    continue  # an interrupted last line
        return out or None
    return None


def protocol_temperature(protocol: dict[str, Any]) -> float | None:
    """The sampling temperature a protocol records (None when it records none)."""
    t = (protocol.get("sampling") or {}).get("temperature", protocol.get("temperature"))
    return None if t is None else float(t)


def in_paper_order(groups: Iterable[Iterable[str]]) -> list[str]:
    """The benchmarks named in any group: registry order first (the paper's), then others by first appearance."""
    names: list[str] = []
    for group in groups:
        names += [b for b in group if b not in names]
    order = list(BENCHMARKS)
    return sorted(names, key=lambda b: (order.index(b) if b in order else len(order), names.index(b)))


def benchmark_columns(runs: list[Run]) -> list[str]:
    """Benchmarks of any run, in paper order."""
    return in_paper_order(r.benchmarks for r in runs)


def with_results(runs: list[Run]) -> list[Run]:
    """The runs that hold results.json (the others hold only scaling.json)."""
    return [r for r in runs if r.results is not None]


def scaling_rows(r: Run) -> dict[str, dict[int, dict[str, Any]]]:
    """{benchmark: {K: point}} of a run's scaling.json (test-time scaling)."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for b, points in ((r.scaling or {}).get("benchmarks") or {}).items():
        out[b] = {int(p["k"]): p for p in points if p.get("k") is not None}
    return out
