"""Verifiable math rewards for R1-style responses: right, fast, and unable to stall training.

    from dler.rewards import MathReward, prepare_gold_answers

    reward = MathReward()                                   # reads the dataset column "answer"
    released = MathReward(grader="released")                # DLER's released reward instead of dler's grader
    train, report = prepare_gold_answers(train, reward=reward, on_invalid="skip")
    trainer = DLERTrainer(..., reward_funcs=[reward], train_dataset=train)

This package imports neither torch nor trl: grading workers import it with math-verify only.
"""

from dler.rewards.extract import THINK_END, completion_text, extract_answer, last_boxed, normalize_gold
from dler.rewards.golds import GoldReport, prepare_gold_answers
from dler.rewards.pool import GradingPool, default_num_workers
from dler.rewards.prechecks import precheck
from dler.rewards.reward import GRADERS, Grade, MathReward, check_grader, math_correctness

__all__ = [
    "GRADERS",
    "THINK_END",
    "GoldReport",
    "Grade",
    "GradingPool",
    "MathReward",
    "check_grader",
    "completion_text",
    "default_num_workers",
    "extract_answer",
    "last_boxed",
    "math_correctness",
    "normalize_gold",
    "precheck",
    "prepare_gold_answers",
]
