"""Training data checks: columns, unparseable gold answers and repeated problems are reported, then skipped or refused."""

import logging

import pytest
from datasets import Dataset

from dler.data import drop_duplicates, math_prompts

ROWS = [
    {"problem": "1 + 1", "answer": "2"},
    {"problem": "2 + 2", "answer": "\\frac{"},  # cannot be parsed
    {"problem": "1 + 1 ", "answer": "2"},  # repeats row 0 (whitespace aside)
    {"problem": "3 + 3", "answer": ""},  # empty
    {"problem": "4 + 4", "answer": "8"},
]


def test_bad_rows_are_counted_and_skipped(caplog):
    with caplog.at_level(logging.WARNING):
        data = math_prompts(Dataset.from_list(ROWS), reward=_in_process_reward())
    assert data["problem"] == ["1 + 1", "4 + 4"]
    assert data["prompt"][0][0]["content"].startswith("1 + 1 Let's think step by step")
    log = caplog.text
    assert "1 of 5 rows repeat an earlier 'problem' (row 2 repeats row 0)" in log
    assert "2 of 4 gold answers in column 'answer' cannot be parsed" in log


def test_float_golds_as_amc_writes_them():
    data = math_prompts(Dataset.from_list([{"problem": "p", "answer": 142.0}]), reward=_in_process_reward())
    assert len(data) == 1


def test_bad_rows_can_stop_the_run():
    with pytest.raises(ValueError, match="row 2 repeats row 0.*duplicate_problems='skip'"):
        drop_duplicates(Dataset.from_list(ROWS), "problem", on_duplicate="error")
    with pytest.raises(ValueError, match="cannot be parsed"):
        math_prompts(Dataset.from_list(ROWS[:2]), on_invalid="error", reward=_in_process_reward())


def test_missing_columns_name_what_is_there():
    with pytest.raises(ValueError, match=r"no column \['answer'\] \(columns: \['question', 'solution'\]\)"):
        math_prompts(Dataset.from_list([{"question": "x", "solution": "y"}]), problem_column="question")


def _in_process_reward():
    from dler.rewards import MathReward

    return MathReward(num_workers=0)
