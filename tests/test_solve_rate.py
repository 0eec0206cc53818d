"""dler solve-rate: each problem's solve rate by sampling, written as a column."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
from eval_fakes import CharTokenizer, ScriptedBackend  # noqa: E402

from dler.cli import main  # noqa: E402
from dler.solve_rate import solve_rates  # noqa: E402

PROBLEMS = [
    {"problem": "always", "answer": "7", "id": 1},
    {"problem": "never", "answer": "7", "id": 2},
    {"problem": "sometimes", "answer": "7", "id": 3},
]


def respond(prompt, seed, j):
    right = "always" in prompt or ("sometimes" in prompt and j % 2 == 0)
    return f"thinking </think> \\boxed{{{7 if right else 8}}}", 5, False


def test_solve_rates_are_the_fraction_of_correct_samples(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PROBLEMS))
    out = solve_rates(
        "scripted",
        data,
        tmp_path / "rated.jsonl",
        n=4,
        generator=ScriptedBackend(respond),
        tokenizer=CharTokenizer(),
        grader_workers=0,
        progress=False,
    )
    assert [r["solve_rate"] for r in out] == [1.0, 0.0, 0.5]
    written = [json.loads(line) for line in (tmp_path / "rated.jsonl").read_text().splitlines()]
    assert written == out and written[2]["id"] == 3  # every input column is kept
    again = ScriptedBackend(respond)  # resumes from the stored generations: nothing is generated twice
    solve_rates(
        "scripted",
        data,
        tmp_path / "rated.jsonl",
        n=4,
        generator=again,
        tokenizer=CharTokenizer(),
        grader_workers=0,
        progress=False,
    )
    assert again.prompts == []


def test_bad_inputs_fail_before_any_model(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"question": "x", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"no column \['problem'\]"):
        solve_rates("unused", data, tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match="n must be >= 2"):
        solve_rates("unused", data, tmp_path / "out.jsonl", n=1, problem_column="question")
    with pytest.raises(SystemExit):
        main(["solve-rate", "--model", "m", "--data", str(tmp_path / "missing.jsonl"), "--output", "o.jsonl"])
