"""The truncation penalty and DA-DLER budgets against hand-computed values."""

import pytest
import torch

from dler.budgets import budget_for_accuracy, parse_length_budgets
from dler.penalties import LengthPenalty, RolloutGroup, TruncationPenalty


def group(correctness, lengths, finished, budget=4):
    return RolloutGroup(
        correctness=torch.tensor(correctness, dtype=torch.float32),
        lengths=torch.tensor(lengths),
        finished=torch.tensor(finished),
        budget=budget,
    )


def test_truncation_zeroes_over_budget_and_unfinished():
    g = group([1.0, 1.0, 1.0, 0.0, 1.0], [3, 4, 5, 2, 3], [True, True, True, True, False])
    # within budget (3, 4 <= 4) and finished keep their reward; 5 > 4 and the unfinished one get 0
    assert TruncationPenalty()(g).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert g.over_budget.tolist() == [False, False, True, False, True]


def test_released_code_keeps_a_tenth():
    g = group([1.0, 1.0, 0.0], [3, 9, 9], [True, True, False])
    assert TruncationPenalty(0.1)(g).tolist() == pytest.approx([1.0, 0.1, 0.0])


def test_truncation_never_rewards_length():
    # for a correct answer the reward does not grow with length
    g = group([1.0] * 8, list(range(1, 9)), [True] * 8)
    rewards = TruncationPenalty(0.1)(g).tolist()
    assert all(a >= b for a, b in zip(rewards, rewards[1:], strict=False))


def test_bad_scale_and_incomplete_plugin():
    with pytest.raises(ValueError, match="truncated_reward_scale"):
        TruncationPenalty(1.5)

    class Incomplete(LengthPenalty):
        name = "incomplete"

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


def test_parse_length_budgets_sorts_and_validates():
    assert parse_length_budgets(["0.5:2000", "0.9:1000"]) == [(0.9, 1000), (0.5, 2000)]
    assert parse_length_budgets([(0.5, 2000)]) == [(0.5, 2000)]
    assert parse_length_budgets(None) == []
    for bad, message in [
        (["0.5-2000"], "MIN_ACCURACY:BUDGET"),
        (["1.5:2000"], r"\[0, 1\]"),
        (["0.5:0"], "positive"),
        (["0.5:10", "0.5:20"], "twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_length_budgets(bad)


def test_budget_bands_paper_rule():
    bands = parse_length_budgets(["0.5:2000"])
    assert budget_for_accuracy(0.5, bands, 4000) == 2000  # >= 0.5 -> short budget
    assert budget_for_accuracy(1.0, bands, 4000) == 2000
    assert budget_for_accuracy(0.4375, bands, 4000) == 4000  # 7/16 -> default
    bands = parse_length_budgets(["0.5:2000", "0.75:1000"])
    assert [budget_for_accuracy(a, bands, 4000) for a in (0.1, 0.5, 0.74, 0.75, 1.0)] == [4000, 2000, 2000, 1000, 1000]


def test_penalties_report_the_budget_they_applied():
    from dler.penalties import get_penalty

    g = group([1.0, 1.0], [3, 9], [True, True], budget=4000)
    g.step = 150
    prune = get_penalty("thinkprune", budgets=(4000, 3000, 2000), stage_steps=(100, 200))
    prune(g)
    assert prune.effective_budget(g) == 3000
    assert TruncationPenalty().effective_budget(g) == 4000
    assert get_penalty("laser", target_length=2048).effective_budget(g) == 2048
