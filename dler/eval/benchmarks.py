"""The benchmark registry and loading problems from the hub or local JSONL files (prompts: `dler.prompts`).

A benchmark is one `Benchmark` entry: where its rows live on the Hugging Face hub (id, config, split, optional
revision) and which fields hold the problem and the gold answer. `--data-dir DIR` replaces the hub with local
files `DIR/<name>.jsonl` whose rows use the same fields, or the normalised `problem` / `answer`.

Adding a benchmark is one call:

    from dler.eval.benchmarks import Benchmark, register_benchmark
    register_benchmark(Benchmark("hmmt25", "MathArena/hmmt_feb_2025", split="train", problem_field="problem"))

Every loaded benchmark records `dataset_revision`: the hub commit it was read from (asked from the hub, or read
from the `datasets` cache path when offline), or `sha256:<file hash>` for a local file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dler.prompts import R1_INSTRUCTION, R1_PROMPT_TEMPLATE  # noqa: F401 (their former home)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Benchmark:
    """One evaluation set.

    Args:
        name: short name used on the command line and as the local file name (`<name>.jsonl`).
        hf_id: dataset id on the Hugging Face hub.
        split: split to evaluate.
        problem_field, answer_field: columns with the problem text and the gold answer.
        revision: hub revision (commit sha, tag or branch) to pin; None takes the default branch and the resolved
            commit is recorded in results.json.
        config: dataset configuration name, if the dataset has several.
        size: the expected number of problems (a different count is warned about, never fatal).
        answer_fn: optional conversion of the raw gold value (e.g. a list of answers) before grading.
        description: one line for `dler eval --list-benchmarks` and the docs.
    """

    name: str
    hf_id: str
    split: str = "test"
    problem_field: str = "problem"
    answer_field: str = "answer"
    revision: str | None = None
    config: str | None = None
    size: int | None = None
    answer_fn: Callable[[Any], Any] | None = field(default=None, compare=False)
    description: str = ""


def join_answers(value: Any) -> Any:
    """OlympiadBench stores `final_answer` as a list: one answer stays itself, several become "a, b" (a tuple)."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return value[0]
        return ", ".join(str(v) for v in value)
    return value


BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(benchmark: Benchmark, overwrite: bool = False) -> Benchmark:
    """Add a benchmark to the registry (by name); an existing name needs `overwrite=True`."""
    if not benchmark.name or "/" in benchmark.name or "," in benchmark.name:
        raise ValueError(f"benchmark name must be non-empty, without '/' or ',': {benchmark.name!r}")
    if benchmark.name in BENCHMARKS and not overwrite:
        raise ValueError(f"benchmark {benchmark.name!r} is already registered (pass overwrite=True to replace it)")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


for _b in (
    Benchmark(
        "math500", "HuggingFaceH4/MATH-500", split="test", size=500,
        description="MATH-500: the 500-problem test subset of MATH (Lightman et al.)",
    ),
    Benchmark(
        "aime24", "HuggingFaceH4/aime_2024", split="train", size=30,
        description="AIME 2024, parts I and II",
    ),
    Benchmark(
        "amc", "AI-MO/aimo-validation-amc", split="train", size=83,
        description="AMC 12 2022 and 2023 (83 problems; float answers such as 142.0)",
    ),
    Benchmark(
        "minerva", "math-ai/minervamath", split="test", problem_field="question", size=272,
        description="Minerva Math: university-level STEM problems (OCWCourses)",
    ),
    Benchmark(
        "olympiad", "math-ai/olympiadbench", split="test", problem_field="question",
        answer_field="final_answer", answer_fn=join_answers, size=675,
        description="OlympiadBench: text-only, English, open-ended maths competition problems",
    ),
    Benchmark(
        "aime25", "math-ai/aime25", split="test", size=30,
        description="AIME 2025, parts I and II",
    ),
    Benchmark(
        "amc23", "math-ai/amc23", split="test", problem_field="question", size=40,
        description="AMC 12 2023 (40 problems with numeric answers)",
    ),
):  # fmt: skip
    register_benchmark(_b)

DEFAULT_BENCHMARKS = ("math500", "aime24", "amc", "minerva", "olympiad")


class BenchmarkError(ValueError):
    """A benchmark name or file that cannot be used; raised before any model is loaded."""


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise BenchmarkError(
            f"unknown benchmark {name!r}; registered benchmarks: {', '.join(BENCHMARKS)}. "
            "Add one with dler.eval.benchmarks.register_benchmark(Benchmark(...))."
        ) from None


def parse_benchmarks(spec: str | list[str] | tuple[str, ...]) -> list[Benchmark]:
    """`"math500,aime24"` (or a list of names) -> registry entries, in the given order, without duplicates."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    names = [s for s in names if s]
    if not names:
        raise BenchmarkError(f"no benchmark given; registered benchmarks: {', '.join(BENCHMARKS)}")
    seen, out = set(), []
    for name in names:
        if name not in seen:
            seen.add(name)
            out.append(get_benchmark(name))
    return out


def local_path(benchmark: Benchmark, data_dir: str | Path) -> Path:
    return Path(data_dir) / f"{benchmark.name}.jsonl"


def check_local_files(benchmarks: list[Benchmark], data_dir: str | Path) -> None:
    """Every `<name>.jsonl` exists under `data_dir` (checked before any model is loaded)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BenchmarkError(f"--data-dir {data_dir} is not a directory")
    missing = [local_path(b, data_dir) for b in benchmarks if not local_path(b, data_dir).is_file()]
    if missing:
        present = sorted(p.name for p in data_dir.glob("*.jsonl"))
        raise BenchmarkError(
            "missing benchmark file(s): "
            + ", ".join(f"{p} (expected for benchmark {p.stem!r})" for p in missing)
            + f". --data-dir must hold one <name>.jsonl per benchmark; found: {present or 'none'}"
        )


@dataclass
class Problem:
    """One problem: its position in the benchmark, text, raw gold answer, and a hash of both for resume checks."""

    index: int
    problem: str
    answer: Any

    @property
    def digest(self) -> str:
        blob = json.dumps([self.problem, self.answer], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class LoadedBenchmark:
    benchmark: Benchmark
    problems: list[Problem]
    source: dict[str, Any]  # what results.json records: where the rows came from, revision, hashes, gold check
    # golds the grader cannot grade (every sample of their problem would score 0): (row index, value, why)
    invalid_golds: list[tuple[int, Any, str]] = field(default_factory=list)


def _field(row: dict, benchmark: Benchmark, which: str, where: str, i: int):
    name = benchmark.problem_field if which == "problem" else benchmark.answer_field
    for key in (name, which):  # the registry's field, else the normalised name
        if key in row:
            return row[key]
    raise BenchmarkError(
        f"{where} row {i} has neither {name!r} nor {which!r} (keys: {sorted(row)}); "
        f"benchmark {benchmark.name!r} reads the {which} from {name!r}"
    )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _content_sha256(problems: list[Problem]) -> str:
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.problem, p.answer], ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def read_jsonl(path: str | Path, error: type[Exception] = ValueError) -> list[dict]:
    """The objects of a JSON Lines file (blank lines skipped); a bad line raises `error` naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{lineno} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{lineno} is not a JSON object")
            rows.append(row)
    return rows


_SHA = re.compile(r"[0-9a-f]{40}")


def _cached_revision(ds) -> str | None:
    """The hub commit of a dataset loaded through `datasets`, from its cache path
    (`.../<owner>___<name>/<config>/<version>/<commit sha>/<file>.arrow`); None when it cannot be told."""
    for entry in getattr(ds, "cache_files", None) or []:
        filename = entry.get("filename") if isinstance(entry, dict) else None
        for part in reversed(Path(filename).parts[:-1] if filename else ()):
            if _SHA.fullmatch(part):
                return part
    return None


def _resolved_revision(benchmark: Benchmark) -> str | None:
    """The hub commit the dataset was read from (None offline or when the hub cannot be asked)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(benchmark.hf_id, revision=benchmark.revision).sha
    except Exception as exc:  # offline, private, rate-limited: the content hash still identifies the rows
        logger.info("could not resolve the hub revision of %s: %s", benchmark.hf_id, exc)
        return None


def load_benchmark(
    benchmark: Benchmark, data_dir: str | Path | None = None, limit: int | None = None, grader: Any = "dler"
) -> LoadedBenchmark:
    """The problems of one benchmark, from `data_dir/<name>.jsonl` or the hub (`datasets.load_dataset`).

    `grader` checks every gold answer at load time (`check_gold_answers`): a grader name ("dler", "released"),
    a `dler.rewards.MathReward` (its workers and caches are used), or None to skip the check.
    """
    if data_dir is not None:
        path = local_path(benchmark, data_dir)
        if not path.is_file():
            check_local_files([benchmark], data_dir)
        rows = read_jsonl(path, BenchmarkError)
        where = str(path)
        file_sha = _sha256_file(path)
        source = {"type": "local", "path": str(path.resolve()), "file_sha256": file_sha,
                  "dataset_revision": f"sha256:{file_sha}"}  # fmt: skip
    else:
        from datasets import load_dataset

        from dler.eval.model_id import hub_unreachable

        if why := hub_unreachable():  # in seconds, not after the hub client's retries
            raise BenchmarkError(
                f"cannot load benchmark {benchmark.name!r} from the hub: {why}. Pass --data-dir with "
                f"{benchmark.name}.jsonl, or set HF_HUB_OFFLINE=1 with {benchmark.hf_id} in the datasets cache"
            )
        try:
            ds = load_dataset(benchmark.hf_id, benchmark.config, split=benchmark.split, revision=benchmark.revision)
        except Exception as exc:  # offline, unknown id or split, gated dataset: say which benchmark, and the way out
            raise BenchmarkError(
                f"cannot load benchmark {benchmark.name!r} from the hub ({benchmark.hf_id}, split {benchmark.split!r}): "
                f"{type(exc).__name__}: {exc}. Without hub access, pass --data-dir with {benchmark.name}.jsonl"
            ) from exc
        rows = list(ds)
        where = f"{benchmark.hf_id} ({benchmark.split})"
        source = {"type": "hub", "hf_id": benchmark.hf_id, "config": benchmark.config, "split": benchmark.split,
                  "revision": benchmark.revision, "resolved_revision": _resolved_revision(benchmark),
                  "cached_revision": _cached_revision(ds), "fingerprint": getattr(ds, "_fingerprint", None)}  # fmt: skip
        # the commit the rows came from: the one in the cache path (what was read), else the hub's answer for the
        # requested revision, else a pinned sha
        pinned = benchmark.revision if benchmark.revision and _SHA.fullmatch(benchmark.revision) else None
        source["dataset_revision"] = source["cached_revision"] or source["resolved_revision"] or pinned
    if not rows:  # a local file names its fields (a hub split that is empty is the registry's to fix)
        fix = f": give one JSON object per line with {benchmark.problem_field!r} and {benchmark.answer_field!r}"
        raise BenchmarkError(f"{where} holds no problems{fix if data_dir is not None else ''}")
    problems = []
    for i, row in enumerate(rows):
        answer = _field(row, benchmark, "answer", where, i)
        if benchmark.answer_fn is not None:
            answer = benchmark.answer_fn(answer)
        problem = _field(row, benchmark, "problem", where, i)
        if not isinstance(problem, str) or not problem.strip():
            raise BenchmarkError(f"{where} row {i}: the problem is empty or not a string")
        problems.append(Problem(i, problem, answer))
    total = len(problems)
    if benchmark.size is not None and total != benchmark.size and data_dir is None:
        logger.warning("%s has %d problems; the registry expects %d", where, total, benchmark.size)
    if limit is not None:
        problems = problems[:limit]
    source.update(
        {
            "problem_field": benchmark.problem_field,
            "answer_field": benchmark.answer_field,
            "num_rows": total,
            "num_problems": len(problems),
            "content_sha256": _content_sha256(problems),
        }
    )
    loaded = LoadedBenchmark(benchmark, problems, source)
    if grader is not None:
        check_gold_answers(loaded, grader)
    return loaded


_SHOWN_INVALID = 20  # rows named in the warning; source["gold_check"]["rows"] holds all of them


def check_gold_answers(loaded: LoadedBenchmark, grader: Any = "dler") -> list[tuple[int, Any, str]]:
    """Grade each gold answer against itself, the way the grader will read it, and report those that fail.

    A gold that cannot be parsed, or that does not grade correct against itself, scores 0 for every sample of
    its problem whatever the model answers. They are logged in one warning (benchmark name, row index, value and
    why), kept in `loaded.invalid_golds` and counted in `loaded.source["gold_check"]`, which results.json
    records. Returns the invalid golds. `grader` is a grader name (checked in this process) or a `MathReward`
    (checked by its workers, which keep the golds cached for grading).
    """
    from dler.rewards import MathReward

    reward = grader if hasattr(grader, "check_answers") else MathReward(num_workers=0, grader=grader)
    try:
        verdicts = reward.check_answers([p.answer for p in loaded.problems])
    finally:
        if reward is not grader:
            reward.close()
    invalid = [(p.index, p.answer, why) for p, (ok, why) in zip(loaded.problems, verdicts, strict=True) if not ok]
    loaded.invalid_golds = invalid
    loaded.source["gold_check"] = {
        "grader": reward.grader,
        "checked": len(loaded.problems),
        "invalid": len(invalid),
        "rows": [[i, _json_safe(v), why] for i, v, why in invalid],
    }
    if invalid:
        shown = "; ".join(f"row {i}: {v!r} ({why})" for i, v, why in invalid[:_SHOWN_INVALID])
        more = f"; and {len(invalid) - _SHOWN_INVALID} more" if len(invalid) > _SHOWN_INVALID else ""
        logger.warning(
            "%s: %d of %d gold answers cannot be graded by the %r grader (every sample of these problems will "
            "score 0): %s%s",
            loaded.benchmark.name, len(invalid), len(loaded.problems), reward.grader, shown, more,
        )  # fmt: skip
    return invalid


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def build_prompt(tokenizer, problem: str, template: str = R1_PROMPT_TEMPLATE) -> str:
    """The R1 prompt of one problem in the model's chat template, ready for generation (the demo's; `dler eval`
    renders any prompt format with `dler.prompts.render`, which refuses a chat format without a template).

    `template` is the user message with `{problem}` where the problem goes (plain replacement, no str.format:
    the R1 instruction's `\\boxed{}` needs no escaping)."""
    content = template.replace("{problem}", problem)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
    logger.warning("the tokenizer has no chat template: the prompt is the raw user message")
    return content


def prompt_ids(tokenizer, prompt: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of a prompt: a chat-formatted one already holds any BOS (no special tokens added, the default); a
    raw one gets them (`add_special_tokens=True`), as TRL tokenises raw prompts."""
    return list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
