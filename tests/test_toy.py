"""The demo's toy task: solutions, splits, grading (the toy rule agrees with the real math reward) and tokenizer."""

import json
import random

import pytest

from dler.demo.toy import (
    VERIFY,
    ToyTask,
    build_toy_tokenizer,
    column_steps,
    count_verify_lines,
    extract_answer,
    has_all_steps,
    is_correct,
    is_held_out,
    necessary_length,
    prompt_messages,
    write_problems,
)


def test_column_steps_carry_by_hand():
    # 57 + 68: 7+8 = 15 (write 5, carry 1), 5+6+1 = 12 (write 2, carry 1) -> 125
    assert column_steps(57, 68) == ["7+8+0=15", "5+6+1=12"]
    assert column_steps(10, 10) == ["0+0+0=00", "1+1+0=02"]


def test_solution_necessary_steps_and_filler():
    task = ToyTask(verifies=(0.0, 0.0, 1.0))  # always two verify lines
    short, long = task.solution(57, 68), task.solution(57, 68, random.Random(0))
    assert short == "<think>\n7+8+0=15\n5+6+1=12\nso 125\n</think>\n\\boxed{125}"
    assert count_verify_lines(short) == 0 and count_verify_lines(long) == 2
    assert long.count(f"{VERIFY}125") == 2
    assert has_all_steps(short, 2) and has_all_steps(long, 2)
    assert not has_all_steps("<think>\nso 125\n</think>\n\\boxed{125}", 2)


def test_grading_reads_the_boxed_answer_after_think():
    text = ToyTask().solution(57, 68)
    assert extract_answer(text) == "125" and is_correct(text, 125) and not is_correct(text, 124)
    assert extract_answer("<think>\n\\boxed{125}") is None, "thinking that never ends scores nothing"
    assert extract_answer("\\boxed{1}</think>\\boxed{2} \\boxed{3}") == "3", "the last boxed answer counts"


def test_the_real_math_reward_agrees_with_the_toy_rule():
    from dler.rewards import MathReward

    task, rng = ToyTask(), random.Random(1)
    texts, golds = [], []
    for a, b in task.problems(20, seed=3):
        solution = task.solution(a, b, rng)
        texts += [solution, solution.replace(f"\\boxed{{{a + b}}}", f"\\boxed{{{a + b + 1}}}"), solution[:-3]]
        golds += [str(a + b)] * 3
    reward = MathReward(num_workers=0)
    assert reward(completions=texts, answer=golds) == [
        float(is_correct(t, g)) for t, g in zip(texts, golds, strict=True)
    ]
    assert sum(reward(completions=texts, answer=golds)) == 20


def test_held_out_split_is_disjoint_from_training_problems(tmp_path):
    task = ToyTask()
    held_out = task.held_out_problems(50, seed=0)
    assert len(set(held_out)) == 50 and all(is_held_out(a, b) for a, b in held_out)
    assert not any(is_held_out(a, b) for a, b in task.problems(500, seed=1))
    path = write_problems(tmp_path / "train.jsonl", task, 300, seed=2)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    problems = [tuple(map(int, r["problem"].split("+"))) for r in rows]
    assert len(set(problems)) == 300, "distinct problems"
    assert not set(problems) & set(task.held_out_problems(10_000, seed=0))
    assert all(int(r["answer"]) == a + b for r, (a, b) in zip(rows, problems, strict=True))
    assert path.read_text() == write_problems(tmp_path / "again.jsonl", task, 300, seed=2).read_text()


def test_write_problems_refuses_more_than_the_split_holds(tmp_path):
    with pytest.raises(ValueError, match="the training split has 75"):
        write_problems(tmp_path / "x.jsonl", ToyTask(digits=1), 76, seed=0)


def test_prompt_is_the_recipes_r1_prompt():
    from dler.data import r1_prompt

    assert prompt_messages(57, 68) == r1_prompt("57+68")


def test_tokenizer_splits_digits_and_keeps_think_tags():
    tokenizer = build_toy_tokenizer()
    ids = tokenizer("1234", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4
    text = ToyTask().solution(57, 68)
    decoded = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
    assert decoded == text, "TRL decodes completions with skip_special_tokens: </think> must survive"
    assert tokenizer.eos_token == "<|im_end|>"
    assert 20 < necessary_length(ToyTask(), tokenizer) < 45
