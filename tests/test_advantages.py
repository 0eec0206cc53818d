"""The advantage formulas against numbers computed by hand and against their definitions."""

import math
import statistics

import pytest
import torch

from dler.advantages import (
    batch_normalized_advantages,
    compute_advantages,
    group_centered,
    group_normalized_advantages,
)


def verl_masked_whiten_reference(scores, lengths):
    """verl's reinforce_plus_plus_baseline + masked_whiten, written out per token from its definition."""
    width = max(lengths)
    values = torch.zeros(len(scores), width, dtype=torch.float64)
    mask = torch.zeros(len(scores), width, dtype=torch.float64)
    for i, (s, n) in enumerate(zip(scores, lengths, strict=True)):
        values[i, :n] = s
        mask[i, :n] = 1
    mean = (values * mask).sum() / mask.sum()
    var = (((values - mean) ** 2) * mask).sum() / mask.sum()
    var = var * mask.sum() / (mask.sum() - 1)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return [whitened[i, 0].item() for i in range(len(scores))]


def test_token_weighting_by_hand():
    # groups [1, 0] and [1, 1]: centred A = [0.5, -0.5, 0, 0]; lengths [2, 1, 3, 4] -> 10 tokens
    adv = batch_normalized_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2, lengths=torch.tensor([2, 1, 3, 4]))
    mean = (0.5 * 2 - 0.5 * 1) / 10  # 0.05
    var = (2 * 0.45**2 + 1 * 0.55**2 + 3 * 0.05**2 + 4 * 0.05**2) / 10 * 10 / 9  # 0.0805556 (Bessel over tokens)
    expected = [(a - mean) / math.sqrt(var + 1e-8) for a in (0.5, -0.5, 0.0, 0.0)]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    assert adv[0].item() == pytest.approx(1.585502, rel=1e-5)


def test_token_weighting_matches_verl_definition():
    g = torch.Generator().manual_seed(0)
    rewards = (torch.rand(48, generator=g) > 0.5).float() * torch.rand(48, generator=g)
    lengths = torch.randint(1, 50, (48,), generator=g)
    ours = batch_normalized_advantages(rewards, 8, lengths=lengths, weighting="token")
    centred = group_centered(rewards, 8).tolist()
    assert ours.tolist() == pytest.approx(verl_masked_whiten_reference(centred, lengths.tolist()), rel=1e-5, abs=1e-6)


def test_sequence_weighting_is_the_paper_formula():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    centred = [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, -0.5, 0.5]
    mean, std = statistics.fmean(centred), statistics.stdev(centred)
    adv = batch_normalized_advantages(rewards, 2, weighting="sequence")
    assert adv.tolist() == pytest.approx([(a - mean) / math.sqrt(std**2 + 1e-8) for a in centred], rel=1e-6)
    # lengths do not matter for the paper formula, and do for the released one
    lengths = torch.tensor([1, 9, 2, 2, 5, 5, 30, 1])
    assert torch.equal(adv, batch_normalized_advantages(rewards, 2, lengths=lengths, weighting="sequence"))
    assert not torch.allclose(adv, batch_normalized_advantages(rewards, 2, lengths=lengths, weighting="token"))


def test_whitening_spans_the_whole_batch_not_each_group():
    # Two groups with very different spreads: per-group standardisation would give both the same magnitudes.
    rewards = torch.tensor([1.0, 0.0, 0.2, 0.0])
    adv = batch_normalized_advantages(rewards, 2, weighting="sequence")
    assert adv[0] / adv[2] == pytest.approx(5.0, rel=1e-6)
    grpo = group_normalized_advantages(rewards, 2)
    assert grpo[0].item() == pytest.approx(grpo[2].item(), rel=1e-3)


def test_group_of_one_uses_mean_zero():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert group_centered(rewards, 1).tolist() == [1.0, 0.0, 1.0, 1.0]
    adv = batch_normalized_advantages(rewards, 1, weighting="sequence")
    mean, std = 0.75, statistics.stdev([1.0, 0.0, 1.0, 1.0])
    assert adv.tolist() == pytest.approx([(r - mean) / math.sqrt(std**2 + 1e-8) for r in [1, 0, 1, 1]], rel=1e-6)


def test_constant_batch_gives_zero_advantages():
    for weighting in ("token", "sequence"):
        adv = batch_normalized_advantages(torch.ones(8), 4, lengths=torch.full((8,), 3), weighting=weighting)
        assert torch.equal(adv, torch.zeros(8))


def test_group_normalization_is_grpo():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    std = statistics.stdev([1.0, 0.0, 0.0, 0.0])
    expected = [(r - 0.25) / (std + 1e-4) for r in (1.0, 0.0, 0.0, 0.0)]
    assert group_normalized_advantages(rewards, 4).tolist() == pytest.approx(expected, rel=1e-6)


def test_compute_advantages_modes_and_boost():
    rewards, lengths = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([3, 4, 5, 6])
    correct = rewards > 0
    assert compute_advantages(rewards, 2, "none").tolist() == [0.5, -0.5, 0.5, -0.5]
    base = compute_advantages(rewards, 2, "batch", lengths=lengths)
    boosted = compute_advantages(rewards, 2, "batch", lengths=lengths, correct=correct, correct_boost=0.1)
    assert (boosted - base).tolist() == pytest.approx([0.1, 0.0, 0.1, 0.0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: batch_normalized_advantages(torch.ones(4), 2), "lengths"),
        (lambda: batch_normalized_advantages(torch.ones(4), 3, weighting="sequence"), "group_size=3"),
        (lambda: batch_normalized_advantages(torch.ones(4), 2, torch.ones(3)), "lengths has 3"),
        (lambda: batch_normalized_advantages(torch.ones(4), 2, weighting="tokens"), "weighting"),
        (lambda: compute_advantages(torch.ones(4), 2, "batched"), "normalization"),
        (lambda: compute_advantages(torch.ones(4), 2, "none", correct_boost=0.1), "correct"),
    ],
)
def test_bad_arguments_fail_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()
