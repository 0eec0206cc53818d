"""Training data for R1-style math RL: DeepScaleR-like rows become chat prompts with their gold answers.

The paper's prompt is the problem, a space, and `Let's think step by step and output the final answer within
\\boxed{}.` as the user message; the model's chat template is applied by TRL. Rows come from a hub id or a local
JSON/JSONL/Parquet file with the same fields, and every gold answer is parsed once, here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset, load_dataset

from dler.eval.benchmarks import R1_PROMPT_TEMPLATE  # one prompt for training and evaluation

logger = logging.getLogger(__name__)
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def r1_prompt(problem: str) -> list[dict[str, str]]:
    """The conversational prompt of the DLER paper (and DeepScaleR) for one problem."""
    return [{"role": "user", "content": R1_PROMPT_TEMPLATE.replace("{problem}", problem)}]


def load_rows(source: str, split: str = "train", revision: str | None = None) -> Dataset:
    """A dataset from a local file (by extension) or a hub id."""
    path = Path(source)
    if path.suffix in LOCAL_FORMATS:
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {source} does not exist")
        return load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
    return load_dataset(source, split=split, revision=revision)


def drop_duplicates(dataset: Dataset, column: str, on_duplicate: str = "skip") -> Dataset:
    """Keep the first row of each distinct `column` value; report the others (count and examples), or raise."""
    if on_duplicate not in ("skip", "error"):
        raise ValueError(f"on_duplicate must be 'skip' or 'error', got {on_duplicate!r}")
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
    what = f"{len(duplicates)} of {len(dataset)} rows repeat an earlier {column!r} ({examples})"
    if on_duplicate == "error":
        raise ValueError(f"{what}. Deduplicate the data, or set duplicate_problems='skip' to drop the repeats.")
    logger.warning("%s: skipping them.", what)
    return dataset.select(sorted(seen.values()))


def math_prompts(
    dataset: Dataset,
    problem_column: str = "problem",
    answer_column: str = "answer",
    on_invalid: str = "skip",
    reward=None,
    on_duplicate: str = "skip",
) -> Dataset:
    """Add the R1 `prompt` column, check the columns, drop repeated problems, and parse every gold answer once.

    Rows whose gold cannot be parsed, and repeats of a problem, are reported (count and examples) and skipped, or
    raise with `on_invalid="error"` / `on_duplicate="error"`.
    """
    missing = [c for c in (problem_column, answer_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"dataset has no column {missing} (columns: {dataset.column_names}); set problem_column / answer_column"
        )
    from dler.rewards import prepare_gold_answers

    dataset = drop_duplicates(dataset, problem_column, on_duplicate)
    dataset, _ = prepare_gold_answers(dataset, answer_column=answer_column, on_invalid=on_invalid, reward=reward)
    return dataset.map(lambda row: {"prompt": r1_prompt(row[problem_column])})


def prompt_token_counts(dataset: Dataset, tokenizer, batch_size: int = 1000) -> list[int]:
    """Tokens of each row's `prompt` after the chat template with the generation prompt, as TRL renders it."""
    counts = []
    for start in range(0, len(dataset), batch_size):
        prompts = dataset[start : start + batch_size]["prompt"]
        texts = tokenizer.apply_chat_template(prompts, tokenize=False, add_generation_prompt=True)
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
