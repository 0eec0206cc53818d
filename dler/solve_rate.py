"""Estimate each training problem's solve rate by sampling, and write it as a column (Concise Reasoning via RL).

The second RL stage of arXiv 2504.05185 trains on *occasionally solvable* problems (0 < p < 1). This samples `n`
responses per problem with the evaluation harness (same backends, grader, resumable generations) and writes every
row of the input back with a `solve_rate` column.
"""

from __future__ import annotations

import json
from pathlib import Path

from dler.eval.benchmarks import Benchmark, read_jsonl, register_benchmark
from dler.eval.run import evaluate
from dler.eval.settings import EvalConfig
from dler.eval.store import GENERATIONS_DIR, GenerationStore

BENCHMARK = "solve_rate"


def solve_rates(
    model: str,
    data: str | Path,
    output: str | Path,
    n: int = 16,
    temperature: float = 0.6,
    problem_column: str = "problem",
    answer_column: str = "answer",
    column: str = "solve_rate",
    work_dir: str | Path | None = None,
    generator=None,
    tokenizer=None,
    grader=None,
    **eval_settings,
) -> list[dict]:
    """Sample `n` responses per row of the JSONL `data`, grade them, and write the rows plus `column` to `output`.

    Generations are kept in `work_dir` (default: `<output>.work`), so an interrupted run resumes. `eval_settings`
    are `EvalConfig` fields (backend, max_tokens, top_p, the prompt settings: prompt_format, answer_region, ...);
    `generator`, `tokenizer` and `grader` replace the ones `evaluate` would build (tests, or a model already loaded).
    """
    rows = read_jsonl(data)
    if not rows:
        raise ValueError(f"{data} has no rows")
    missing = [c for c in (problem_column, answer_column) if c not in rows[0]]
    if missing:
        raise ValueError(f"{data} has no column {missing}; its columns are {sorted(rows[0])}")
    if n < 2:
        raise ValueError(f"n must be >= 2 to tell 'sometimes' from 'always', got {n}")
    EvalConfig(model=model, output_dir=str(output), **eval_settings).prompt()  # bad prompt settings: before any write
    work = Path(work_dir) if work_dir else Path(f"{output}.work")
    (work / "data").mkdir(parents=True, exist_ok=True)
    with open(work / "data" / f"{BENCHMARK}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({"problem": row[problem_column], "answer": row[answer_column]}) + "\n")
    register_benchmark(Benchmark(name=BENCHMARK, hf_id=str(data), description="solve-rate estimation"), overwrite=True)
    config = EvalConfig(
        model=model,
        output_dir=str(work / "generations"),
        benchmarks=[BENCHMARK],
        n=n,
        temperatures=[temperature],
        data_dir=str(work / "data"),
        **eval_settings,
    )
    evaluate(config, backend=generator, tokenizer=tokenizer, grader=grader)
    records = GenerationStore(work / "generations" / GENERATIONS_DIR / f"{BENCHMARK}.jsonl").load()

    out = []
    for i, row in enumerate(rows):
        scores = records[i]["correct"]
        out.append({**row, column: sum(s > 0 for s in scores) / len(scores)})
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w") as f:
        for row in out:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    rates = [r[column] for r in out]
    print(  # the command's result, not a warning
        f"solve rates of {len(rates)} problems: {sum(p == 0 for p in rates)} never solved, "
        f"{sum(0 < p < 1 for p in rates)} sometimes (0 < p < 1), {sum(p == 1 for p in rates)} always; "
        f"written to {output}"
    )
    return out
