"""Training data for R1-style math RL: DeepScaleR-like rows become prompts with their gold answers.

The prompt is a `dler.prompts` format, the one `dler eval` reads too. The paper's (`r1`, the default) is the problem,
a space, and `Let's think step by step and output the final answer within \\boxed{}.` as the user message; the
model's chat template is applied by TRL. A format without the chat template gives TRL the raw text. Rows come from a
hub id or a local JSON/JSONL/Parquet/CSV file with the same fields, and every gold answer is parsed once, here.

Every problem with the data (a missing, empty, non-UTF-8 or malformed file, missing columns, unparseable gold
answers, too few usable rows) raises a `DataError` naming the file and what to do, before any model loads.
"""

from __future__ import annotations

import codecs
import json
import logging
from pathlib import Path

from datasets import Dataset, load_dataset

from dler.prompts import PromptFormat, get_format, prompt_of  # one prompt for training and evaluation

logger = logging.getLogger(__name__)
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
SUPPORTED = ", ".join(sorted(LOCAL_FORMATS))
_FORMAT_NAMES = {".json": "JSON", ".jsonl": "JSON Lines", ".parquet": "Parquet", ".csv": "CSV"}
_ROW_HINT = 'one {"problem": ..., "answer": ...} object per line of a .jsonl file'
_CHUNK = 1 << 20


class DataError(ValueError):
    """A dataset that cannot be trained on; the message names the file (or hub id) and says what to do."""


def r1_prompt(problem: str) -> list[dict[str, str]]:
    """The conversational prompt of the DLER paper (and DeepScaleR) for one problem."""
    return prompt_of(get_format("r1"), problem)


def load_rows(source: str, split: str = "train", revision: str | None = None) -> Dataset:
    """A dataset from a local file (by extension: .json, .jsonl, .parquet, .csv), a local folder of such files, or a
    hub id. Raises `DataError` naming the file and the fix when it is missing, empty, a directory, not UTF-8,
    malformed (with the line), of an unsupported extension, or has no rows."""
    if not source:
        raise DataError(f"no dataset given: pass a data file ({SUPPORTED}) or a hub id as --dataset_name")
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_folder(path, source, split)
    if path.suffix in LOCAL_FORMATS or path.exists():
        return _load_file(path, source)
    try:
        rows = load_dataset(source, split=split, revision=revision)
    except Exception as e:
        at = f"split {split!r}" + (f", revision {revision!r}" if revision else "")
        local = f"There is no local file {source}" + (
            f" (and {path.suffix!r} is not a supported extension)" if path.suffix else ""
        )
        raise DataError(
            f"could not load dataset {source} ({at}) from the Hugging Face Hub: {_reason(e)}. Check the "
            f"hub id, split and revision (and the network, or HF_HUB_OFFLINE). {local}; local data files must end in one of "
            f"{SUPPORTED}."
        ) from e
    return _has_rows(rows, f"dataset {source} (split {split!r})")


def _load_folder(path: Path, source: str, split: str) -> Dataset:
    files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_FORMATS and p.is_file())
    if path.suffix in LOCAL_FORMATS:
        inside = f" (it holds {', '.join(str(p) for p in files[:3])})" if files else ""
        raise DataError(f"dataset file {source} is a directory, not a file{inside}; pass the path of one data file.")
    if not files:
        raise DataError(
            f"dataset {source} is a directory with no data files ({SUPPORTED}); pass the path of a data file."
        )
    try:
        rows = load_dataset(str(path), split=split)
    except Exception as e:
        raise DataError(
            f"could not load the data files in directory {source} (split {split!r}): {_reason(e)}. Pass the path "
            "of one data file instead."
        ) from e
    return _has_rows(rows, f"dataset directory {source} (split {split!r})")


def _load_file(path: Path, source: str) -> Dataset:
    if not path.exists():
        raise DataError(f"dataset file {source} does not exist; check the path (relative to {Path.cwd()}).")
    if not path.is_file():
        raise DataError(f"dataset file {source} is not a regular file; pass the path of a data file.")
    if path.suffix not in LOCAL_FORMATS:
        which = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise DataError(
            f"dataset file {source} has {which}; supported extensions: {SUPPORTED}. Convert it (for example to "
            f"JSON Lines, {_ROW_HINT}) and name it accordingly."
        )
    if _is_blank(path):
        raise DataError(f"dataset file {source} is empty; it needs one problem per row ({_ROW_HINT}).")
    if path.suffix != ".parquet":  # checked first: pyarrow reads bad bytes into strings that fail later
        bad = _first_non_utf8(path)
        if bad is not None:
            offset, line, byte = bad
            raise DataError(
                f"dataset file {source} is not UTF-8: byte {offset} (line {line}) is 0x{byte:02x}. Save it as UTF-8 "
                f"(for example, if it is Windows-1252: iconv -f cp1252 -t utf-8 {source} > utf8{path.suffix})."
            )
    try:
        rows = load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
    except Exception as e:
        raise _diagnose(path, source, e) from e
    return _has_rows(rows, f"dataset file {source}")


def _has_rows(rows: Dataset, name: str) -> Dataset:
    if len(rows) == 0:
        raise DataError(f"{name} has no rows; add problems ({_ROW_HINT}).")
    return rows


def _is_blank(path: Path) -> bool:
    """0 bytes, or (for text formats) only whitespace; reads only up to the first other byte."""
    if path.stat().st_size == 0:
        return True
    if path.suffix == ".parquet":
        return False
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            if chunk.strip():
                return False
    return True


def _reason(error: BaseException) -> str:
    """`Type: message` of the outermost exception in the chain with a message of its own (not datasets' generic
    "An error occurred while generating the dataset")."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if str(error).strip() and type(error).__name__ != "DatasetGenerationError":
            return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
        error = error.__cause__ or error.__context__
    return "unknown error"


def _diagnose(path: Path, source: str, error: Exception) -> DataError:
    """Why `datasets` could not read a local file, in the user's terms: the first line that is not JSON, no rows, or
    else the reading error itself."""
    kind = _FORMAT_NAMES[path.suffix]
    if path.suffix in (".json", ".jsonl"):
        found = _json_problem(path)
        if found is not None:
            return DataError(f"dataset file {source}: {found}")
    if "corresponds to no data" in str(error) or isinstance(error, StopIteration):
        return DataError(f"dataset file {source} has no rows; add problems ({_ROW_HINT}).")
    return DataError(
        f"could not read dataset file {source} as {kind}: {_reason(error)}. Check that it is valid {kind}."
    )


def _first_non_utf8(path: Path) -> tuple[int, int, int] | None:
    """(byte offset, 1-based line, byte value) of the first byte that is not UTF-8, or None; streams the file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    start = 0  # file offset of the current chunk
    line = 1  # line at the start of the current chunk
    with path.open("rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            pending = decoder.getstate()[0]  # the incomplete sequence ending the previous chunk (no newline in it)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:  # e.object is pending + chunk
                in_chunk = e.start - len(pending)
                return start + in_chunk, line + chunk[: max(in_chunk, 0)].count(b"\n"), e.object[e.start]
            if not chunk:
                return None
            line += chunk.count(b"\n")
            start += len(chunk)


def _json_problem(path: Path) -> str | None:
    """The first syntax problem of a JSON Lines file (line by line) or a JSON array document, or None."""
    with path.open(encoding="utf-8-sig") as f:
        head = f.read(_CHUNK).lstrip()
    if path.suffix == ".json" and head.startswith("["):
        try:
            document = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as e:
            return _json_syntax(e)
        if not document:
            return f"it holds an empty array: no rows. Add problems ({_ROW_HINT})."
        rows = document if isinstance(document, list) else []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                return f"element {i} of the array is {type(row).__name__}, not an object with the row's fields."
        return None
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if path.suffix == ".json" and number == 1:  # not JSON Lines: perhaps a pretty-printed document
                    return _json_document_problem(path)
                shown = line.strip()
                shown = shown if len(shown) <= 80 else shown[:77] + "..."
                return (
                    f"line {number} is not valid JSON ({e.msg} at column {e.colno}): {shown!r}. Fix or remove that "
                    f"line ({_ROW_HINT})."
                )
            if not isinstance(row, dict):
                return f"line {number} is a JSON {type(row).__name__}, not an object ({_ROW_HINT})."
    return None


def _json_document_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        return _json_syntax(e)
    return None


def _json_syntax(e: json.JSONDecodeError) -> str:
    return (
        f"invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}). Fix the file (a .json file holds one array of "
        "row objects, or one object per line)."
    )


def _named(source: str | None) -> str:
    return f"dataset {source}" if source else "the dataset"


def drop_duplicates(dataset: Dataset, column: str, on_duplicate: str = "skip", source: str | None = None) -> Dataset:
    """Keep the first row of each distinct `column` value; report the others (count and examples), or raise
    `DataError`. `source` names the dataset in the report."""
    if on_duplicate not in ("skip", "error"):
        raise DataError(f"on_duplicate (--duplicate_problems) must be 'skip' or 'error', got {on_duplicate!r}")
    seen: dict = {}
    duplicates = []
    for i, value in enumerate(dataset[column]):
        key = value.strip() if isinstance(value, str) else value
        if key in seen:
            duplicates.append((i, seen[key]))
        else:
            seen[key] = i
    if not duplicates:
        return dataset
    examples = ", ".join(f"row {i} repeats row {first}" for i, first in duplicates[:5])
    what = f"{_named(source)}: {len(duplicates)} of {len(dataset)} rows repeat an earlier {column!r} ({examples})"
    if on_duplicate == "error":
        raise DataError(
            f"{what}. Deduplicate the data, or set duplicate_problems='skip' (command line: --duplicate_problems "
            "skip) to drop the repeats."
        )
    logger.warning("%s: skipping them.", what)
    return dataset.select(sorted(seen.values()))


def math_prompts(
    dataset: Dataset,
    problem_column: str = "problem",
    answer_column: str = "answer",
    on_invalid: str = "skip",
    reward=None,
    on_duplicate: str = "skip",
    source: str | None = None,
    prompt_format: PromptFormat | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Add the `prompt` column, check the columns, drop repeated problems, and parse every gold answer once.

    `prompt_format` (default: r1) makes each prompt: a conversation with the chat template, the raw text without.

    Rows whose gold cannot be parsed, and repeats of a problem, are reported (count and examples) and skipped, or
    raise with `on_invalid="error"` / `on_duplicate="error"`. Every error is a `DataError`; `source` (the file or
    hub id) names the dataset in them. Returns the rows and how many were skipped and why, `{"invalid_answers": n,
    "duplicate_problems": m}` (the keys are the command-line flags that choose skip or error), for
    `check_usable_rows`."""
    name = _named(source)
    if on_invalid not in ("skip", "error"):
        raise DataError(f"on_invalid (--invalid_answers) must be 'skip' or 'error', got {on_invalid!r}")
    missing = [c for c in (problem_column, answer_column) if c not in dataset.column_names]
    if missing:
        which = "column " + repr(missing[0]) if len(missing) == 1 else "columns " + " and ".join(map(repr, missing))
        raise DataError(
            f"{name} has no {which} (columns: {', '.join(map(repr, dataset.column_names))}); set problem_column / "
            "answer_column (command line: --problem_column / --answer_column, or --eval_problem_column / "
            "--eval_answer_column for the validation set)"
        )
    from dler.rewards import prepare_gold_answers

    total = len(dataset)
    dataset = drop_duplicates(dataset, problem_column, on_duplicate, source=source)
    duplicates = total - len(dataset)
    try:
        dataset, report = prepare_gold_answers(
            dataset, answer_column=answer_column, on_invalid=on_invalid, reward=reward
        )
    except DataError:
        raise
    except (ValueError, KeyError) as e:
        raise DataError(f"{name}: {e}") from e
    skipped = {"invalid_answers": report.invalid, "duplicate_problems": duplicates}
    fmt = prompt_format or get_format("r1")
    return dataset.map(lambda row: {"prompt": prompt_of(fmt, row[problem_column])}), skipped


_SKIPPED = {
    "invalid_answers": lambda n: f"{n} with unparseable gold answers",
    "duplicate_problems": lambda n: f"{n} repeated problem{'s' if n != 1 else ''}",
}


def check_usable_rows(num_rows: int, needed: int, source: str, skipped: dict[str, int]) -> None:
    """Raise `DataError` when fewer than `needed` rows (one generation batch, `prompts_per_generation`) remain
    after skipping (`skipped`: the counts of `math_prompts`), naming the file, the counts and the fixes."""
    if num_rows >= needed:
        return
    parts = [
        _SKIPPED[key](n) if key in _SKIPPED else f"{n} {key.replace('_', ' ')}" for key, n in skipped.items() if n
    ]
    after = ""
    if parts:
        after = " after skipping " + (f"{', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1 else parts[0])
    fixes = [f"--{key} error lists them" for key in ("invalid_answers", "duplicate_problems") if skipped.get(key)]
    fix = f"fix the skipped rows ({'; '.join(fixes)}), " if fixes else ""
    raise DataError(
        f"{source}: {num_rows} usable problem{'s' if num_rows != 1 else ''}{after}, fewer than one generation batch "
        f"(prompts_per_generation={needed}). Add problems, {fix}or lower --prompts_per_generation and "
        "--prompts_per_update."
    )


def prompt_token_counts(
    dataset: Dataset, tokenizer, batch_size: int = 1000, chat_template_kwargs: dict | None = None
) -> list[int]:
    """Tokens of each row's `prompt` as TRL renders it: a conversation through the chat template with the generation
    prompt (and `chat_template_kwargs`), raw text tokenised with the tokenizer's special tokens."""
    counts = []
    for start in range(0, len(dataset), batch_size):
        prompts = dataset[start : start + batch_size]["prompt"]
        if prompts and isinstance(prompts[0], str):
            counts += [len(ids) for ids in tokenizer(prompts)["input_ids"]]
            continue
        kwargs = chat_template_kwargs or {}
        texts = tokenizer.apply_chat_template(prompts, tokenize=False, add_generation_prompt=True, **kwargs)
        counts += [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return counts


def check_prompt_lengths(
    counts: list[int], max_prompt_length: int | None, max_completion_length: int, context: int | None, name: str
) -> int:
    """Check that every prompt (cut to `max_prompt_length`) plus a full response fits the model's `context`, and
    report the prompts the cap will cut. Returns how many; raises naming the rows that cannot fit."""
    cut = [i for i, n in enumerate(counts) if max_prompt_length is not None and n > max_prompt_length]
    if cut:
        examples = ", ".join(f"row {i} ({counts[i]} tokens)" for i in cut[:5])
        logger.warning(
            "%s: %d of %d prompts are longer than max_prompt_length=%d tokens and will keep their last %d tokens "
            "(%s).",
            name,
            len(cut),
            len(counts),
            max_prompt_length,
            max_prompt_length,
            examples,
        )
    if context is None:
        return len(cut)
    kept = [min(n, max_prompt_length) if max_prompt_length is not None else n for n in counts]
    too_long = [i for i, n in enumerate(kept) if n + max_completion_length > context]
    if too_long:
        examples = ", ".join(f"row {i} ({kept[i]} tokens)" for i in too_long[:5])
        raise ValueError(
            f"{name}: {len(too_long)} prompts plus max_completion_length={max_completion_length} exceed the model's "
            f"context of {context} tokens ({examples}). Set max_prompt_length (paper: 1024) to cut them, lower "
            "max_completion_length, or drop those rows."
        )
    return len(cut)


def model_context_length(config) -> int | None:
    """The model's context in tokens, from its config (None when it does not say)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
