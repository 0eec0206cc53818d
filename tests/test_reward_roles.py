"""Reward roles: correctness shaped by the length penalty, the other reward functions added after it, and rows whose
every reward is None treated as TRL 1.16 treats them. Hand-computed numbers first, then the trainer on the tiny
model, then the trainer against `trl.GRPOTrainer` on the same batch."""

import math
from dataclasses import dataclass

import pytest
import torch
from helpers import addition_dataset, tiny_config

from dler.advantages import compute_advantages
from dler.budgets import group_accuracy
from dler.penalties import LengthPenalty, RolloutGroup, get_penalty
from dler.reward_roles import combine_rewards, correctness_columns, correctness_of, weighted_nansum
from dler.sampling import classify_groups

NAN = float("nan")
G = 4


def approx(values, **kw):
    """`pytest.approx` for lists holding NaN."""
    return pytest.approx(values, nan_ok=True, **kw)


# ---------------------------------------------------------------- the worked example of docs/rewards.md
# One prompt, four rollouts; reward functions [math_correctness, format_reward, repetition_penalty], weights
# [1.0, 0.5, 1.0]. Rollout 2 is cut by the generation cap; rollout 4 is scored by none of the functions.
MATH = [1.0, 1.0, 0.0, NAN]
FORMAT = [1.0, 0.0, 1.0, NAN]
REPETITION = [0.0, -0.5, 0.0, NAN]
WEIGHTS = torch.tensor([1.0, 0.5, 1.0])


def worked_example():
    rewards = torch.tensor([MATH, FORMAT, REPETITION]).T
    correctness = correctness_of(rewards, WEIGHTS, [0])
    group = RolloutGroup(
        correctness=correctness.nan_to_num(nan=0.0),
        lengths=torch.tensor([1200, 4000, 900, 700]),
        finished=torch.tensor([True, False, True, True]),
        budget=4000,
    )
    shaped = torch.where(torch.isnan(correctness), NAN, get_penalty("truncation")(group))
    return rewards, correctness, shaped, combine_rewards(shaped, rewards, WEIGHTS, [0], G)


def test_worked_example_by_hand():
    rewards, correctness, shaped, total = worked_example()
    assert correctness.tolist() == approx([1.0, 1.0, 0.0, NAN])  # the math reward alone: format is not correctness
    assert shaped.tolist() == approx([1.0, 0.0, 0.0, NAN])  # the cut rollout earns 0 (paper)
    assert total.tolist() == approx([1.5, -0.5, 0.5, NAN])  # + 0.5 x format + 1.0 x repetition, after shaping
    assert group_accuracy(correctness) == pytest.approx(2 / 3)  # DA-DLER reads correctness, over scorable rows
    # group mean over the 3 scorable rows: 0.5 -> centred [1, -1, 0]; Bessel std over 3 rows: sqrt(2 / 2) = 1
    group = compute_advantages(total, G, "group")
    assert group.tolist() == pytest.approx([1 / 1.0001, -1 / 1.0001, 0.0, 0.0], rel=1e-6)
    # DLER's whitening (paper weights): mean 0, variance (1 + 1 + 0) / 3 x 3 / 2 = 1
    batch = compute_advantages(total, G, "batch", weighting="sequence")
    assert batch.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0], rel=1e-6)
    # the released weights: tokens [1200, 4000, 900], the unscorable rollout weighs 0
    tokens = compute_advantages(total, G, "batch", lengths=torch.tensor([1200, 4000, 900, 700]))
    mean = (1200 - 4000) / 6100
    var = (1200 * (1 - mean) ** 2 + 4000 * (-1 - mean) ** 2 + 900 * mean**2) / 6099
    expected = [(x - mean) / math.sqrt(var + 1e-8) for x in (1.0, -1.0, 0.0)] + [0.0]
    assert tokens.tolist() == pytest.approx(expected, rel=1e-5)
    # the correctness boost reaches the correct rollouts only, never the unscorable one
    boosted = compute_advantages(total, G, "group", correct=correctness > 0, correct_boost=0.1)
    assert (boosted - group).tolist() == pytest.approx([0.1, 0.1, 0.0, 0.0])


def test_summing_everything_into_correctness_was_wrong():
    """What dler did before reward roles: every function summed into c, then shaped, the None row a 0."""
    rewards, *_ = worked_example()
    old_c = (rewards * WEIGHTS).nansum(dim=1)  # [1.5, 0.5, 0.5, 0.0]
    assert old_c.tolist() == [1.5, 0.5, 0.5, 0.0] and (old_c > 0).float().mean() == 0.75  # "correct" = formatted
    old = compute_advantages(torch.tensor([1.5, 0.0, 0.5, 0.0]), G, "group")
    assert old[3] < 0, "the unscorable rollout was pushed down as if wrong"


def test_weighted_nansum_is_nan_only_when_every_function_is_none():
    rewards = torch.tensor([[1.0, NAN], [NAN, NAN], [NAN, 2.0]])
    assert weighted_nansum(rewards, torch.tensor([2.0, 0.5])).tolist() == approx([2.0, NAN, 1.0])
    # two correctness functions: c is absent only where both are
    assert correctness_of(rewards, torch.tensor([2.0, 0.5]), [0, 1]).tolist() == approx([2.0, NAN, 1.0])
    assert correctness_of(rewards, torch.tensor([2.0, 0.5]), [0]).tolist() == approx([2.0, NAN, NAN])


def test_other_functions_count_where_correctness_is_none():
    shaped = torch.tensor([NAN, NAN, 1.0, NAN])  # no gold answer for rollouts 1, 2 and 4
    rewards = torch.tensor([[NAN, 1.0], [NAN, 0.0], [1.0, 1.0], [NAN, NAN]])
    assert combine_rewards(shaped, rewards, torch.tensor([1.0, 0.5]), [0], G).tolist() == approx([0.5, 0, 1.5, NAN])


def test_normalize_then_sum_by_hand():
    # groups of 2; shaped correctness [1, 0] and format [0, 1] (weight 0.5). Each column within its group:
    # mean 0.5, Bessel std sqrt(0.5) -> +-0.5 / (0.70711 + 1e-4)
    z = 0.5 / (math.sqrt(0.5) + 1e-4)
    shaped, rewards = torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    total = combine_rewards(shaped, rewards, torch.tensor([1.0, 0.5]), [0], 2, "normalize_then_sum")
    assert total.tolist() == pytest.approx([z - 0.5 * z, -z + 0.5 * z], rel=1e-6)
    summed = combine_rewards(shaped, rewards, torch.tensor([1.0, 0.5]), [0], 2)
    assert summed.tolist() == [1.0, 0.5]
    # the correctness column is standardised in the function's own units, then weighted (TRL's w x z-score)
    doubled = combine_rewards(2 * shaped, rewards, torch.tensor([2.0, 0.5]), [0], 2, "normalize_then_sum")
    assert doubled.tolist() == pytest.approx([2 * z - 0.5 * z, -2 * z + 0.5 * z], rel=1e-6)
    # a column with one scorable rollout in the group has no std (NaN) and adds nothing; all-None stays NaN
    sparse = torch.tensor([[1.0, NAN], [0.0, 1.0], [NAN, NAN], [NAN, NAN]])
    out = combine_rewards(
        torch.tensor([1.0, 0.0, NAN, NAN]), sparse, torch.tensor([1.0, 1.0]), [0], 2, "normalize_then_sum"
    )
    assert out.tolist() == approx([z, -z, NAN, NAN], rel=1e-6)
    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        combine_rewards(shaped, rewards, torch.ones(2), [0], 2, "sum")


def test_unscorable_rows_leave_every_statistic():
    """A NaN reward changes no other advantage and gets 0, under every normalisation."""
    rewards = torch.tensor([1.0, 0.0, NAN, 1.0, 0.5, 0.5, 0.0, NAN])
    kept = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.5, 0.0])  # the same without the NaN rows: groups of 3
    lengths = torch.tensor([3, 5, 9, 2, 4, 6, 7, 1])
    kept_lengths = torch.tensor([3, 5, 2, 4, 6, 7])
    scorable = ~torch.isnan(rewards)
    for normalization in ("batch", "group", "batch_std", "none"):
        full = compute_advantages(rewards, 4, normalization, lengths=lengths)
        alone = compute_advantages(kept, 3, normalization, lengths=kept_lengths)
        assert full[~scorable].tolist() == [0.0, 0.0], normalization
        assert full[scorable].tolist() == pytest.approx(alone.tolist(), rel=1e-6), normalization
    assert compute_advantages(torch.full((4,), NAN), 2, "batch", lengths=torch.ones(4)).tolist() == [0.0] * 4


def test_batch_std_is_trls_batch_scaling_by_hand():
    # groups [1, 0] and [1, 1]: centred [0.5, -0.5, 0, 0]; the std of the rewards themselves (mean 0.75):
    # sqrt((0.0625 + 0.5625 + 0.0625 + 0.0625) / 3) = 0.5
    adv = compute_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2, "batch_std")
    assert adv.tolist() == pytest.approx([0.5 / 0.5001, -0.5 / 0.5001, 0.0, 0.0], rel=1e-6)


def test_classify_groups_over_scorable_rollouts():
    values = torch.tensor([1.0, NAN, 1.0, 1.0] + [NAN] * 4 + [0.0, NAN, 1.0, NAN] + [0.0, 0.0, NAN, 0.0])
    signal = classify_groups(values, 4)
    assert signal.keep.tolist() == [False, False, True, False]
    assert signal.all_positive.tolist() == [True, False, False, False]
    assert signal.unscorable.tolist() == [False, True, False, False]
    assert signal.all_zero.tolist() == [False, False, False, True]


def test_group_accuracy_over_scorable_rollouts():
    assert group_accuracy(torch.tensor([1.0, NAN, 0.0, 0.0])) == pytest.approx(1 / 3)
    assert group_accuracy(torch.full((4,), NAN)) == 0.0


def test_correctness_columns_and_their_errors():
    names = ["math_correctness", "format_reward", "repetition_penalty"]
    assert correctness_columns(names, None) == [0]
    assert correctness_columns(names, ["format_reward", "math_correctness"]) == [1, 0]
    with pytest.raises(ValueError, match=r"\['math'\].*\['math_correctness', 'format_reward', 'repetition_penalty'\]"):
        correctness_columns(names, ["math"])
    with pytest.raises(ValueError, match="at least one reward function"):
        correctness_columns([], None)
    with pytest.raises(ValueError, match="repeat a name"):
        correctness_columns(["f", "f"], ["f"])
    with pytest.raises(ValueError, match=r"\['math_correctness'\] a weight <= 0"):
        correctness_columns(names, None, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="reward_weights has 2 entries for 3"):
        correctness_columns(names, None, [1.0, 1.0])


# ---------------------------------------------------------------- the trainer on the tiny model
def by_position(table):
    """A reward function returning `table[a % 2][i % G]` for rollout i of a prompt with column `a`: known values,
    whatever the model writes. Named like the function it stands for."""

    def reward(completions, a, **kwargs):
        return [table[x % 2][i % G] for i, x in enumerate(a)]

    return reward


# prompts with even `a`: the worked example; odd `a`: no gold answer (math None), format and repetition only
math_correctness = by_position([[1.0, 1.0, 0.0, None], [None] * 4])
math_correctness.__name__ = "math_correctness"
format_reward = by_position([[1.0, 0.0, 1.0, None], [1.0, 0.0, 0.0, 0.0]])
format_reward.__name__ = "format_reward"
repetition_penalty = by_position([[0.0, -0.5, 0.0, None], [0.0, 0.0, -1.0, 0.0]])
repetition_penalty.__name__ = "repetition_penalty"
REWARDS = [format_reward, math_correctness, repetition_penalty]  # correctness is not first: named below


@dataclass(eq=False)
class CutSecond(LengthPenalty):
    """The truncation penalty as if every group's second rollout had been cut: a penalty that ignores the model."""

    def __call__(self, group):
        return group.correctness * torch.tensor([1.0, 0.0, 1.0, 1.0])


def make_trainer(tmp_path, model_dir, rewards=REWARDS, **overrides):
    from dler import DLERTrainer

    settings = dict(
        dynamic_sampling=False,
        correctness_rewards=["math_correctness"],
        reward_weights=[0.5, 1.0, 1.0],
        advantage_weighting="sequence",
    )
    args = tiny_config(tmp_path, **{**settings, **overrides})
    return DLERTrainer(
        model=model_dir, reward_funcs=rewards, args=args, train_dataset=addition_dataset(), penalty=CutSecond()
    )


def score(trainer, a_values=(4, 5, 6, 7)):
    dataset = trainer.train_dataset
    rows = [next(dict(r) for r in dataset if r["a"] == a) for a in a_values]
    trainer.model.train()
    return trainer._generate_and_score_completions([dict(r) for r in rows for _ in range(G)])


@pytest.mark.slow
def test_math_format_repetition_advantages_by_hand(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir)
    out = score(trainer)
    # even a: total [1.5, -0.5, 0.5, None] (the worked example), centred [1, -1, 0]
    # odd a: math None, total = 0.5 x format + repetition = [0.5, 0, -1, 0], mean -0.125
    odd = [0.625, 0.125, -0.875, 0.125]
    # whitened over the 14 scorable rollouts (paper weights): mean 0, variance (2 x 2 + 2 x 1.1875) / 13
    std = math.sqrt((2 * 2 + 2 * sum(x * x for x in odd)) / 13)
    even = [1 / std, -1 / std, 0.0, 0.0]
    expected = even + [x / std for x in odd] + even + [x / std for x in odd]
    assert out["advantages"].tolist() == pytest.approx(expected, abs=1e-5)
    metrics = trainer._metrics["train"]
    assert metrics["dler/correctness"][-1] == pytest.approx(4 / 6)  # math only, over the rows it scored
    assert metrics["dler/shaped_reward"][-1] == pytest.approx(2 / 6)  # the cut rollouts lost their 1
    assert metrics["dler/unscorable_frac"][-1] == pytest.approx(2 / 16)
    assert metrics["dler/reward"][-1] == pytest.approx((2 * (1.5 - 0.5 + 0.5) + 2 * (0.5 + 0 - 1 + 0)) / 14)


@pytest.mark.slow
def test_normalize_then_sum_in_the_trainer(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir, multi_objective_aggregation="normalize_then_sum")
    out = score(trainer, a_values=(4, 6))

    def z(values):  # one column within its group, by hand: (x - mean) / (Bessel std + 1e-4)
        mean = sum(values) / len(values)
        std = math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1))
        return [(x - mean) / (std + 1e-4) for x in values]

    # shaped math [1, 0, 0] (weight 1), format [1, 0, 1] (0.5), repetition [0, -0.5, 0] (1); rollout 4: None
    total = [m + 0.5 * f + r for m, f, r in zip(z([1, 0, 0]), z([1, 0, 1]), z([0, -0.5, 0]), strict=True)]
    rewards = torch.tensor(total + [NAN]).repeat(2)
    expected = compute_advantages(rewards, G, "batch", weighting="sequence")
    assert out["advantages"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    summed = score(make_trainer(tmp_path, tiny_model_dir), a_values=(4, 6))
    assert not torch.allclose(out["advantages"], summed["advantages"])


@pytest.mark.slow
def test_dynamic_sampling_counts_unscorable_groups(tmp_path, tiny_model_dir):
    never = by_position([[None] * 4, [None] * 4])
    trainer = make_trainer(
        tmp_path,
        tiny_model_dir,
        [never],
        dynamic_sampling=True,
        max_sampling_rounds=1,
        correctness_rewards=None,
        reward_weights=None,
    )
    from dler.trainer import DynamicSamplingExhausted

    with pytest.raises(DynamicSamplingExhausted, match="0 all positive, 4 unscorable"):
        score(trainer)


def test_unknown_correctness_reward_fails_before_the_model_loads(tmp_path):
    from dler import DLERTrainer

    args = tiny_config(tmp_path, correctness_rewards=["math"])
    with pytest.raises(ValueError, match=r"correctness_rewards names \['math'\].*\['format_reward', 'math_corr"):
        DLERTrainer(model=str(tmp_path / "no-such-model"), reward_funcs=REWARDS, args=args)


# ---------------------------------------------------------------- against trl.GRPOTrainer on the same batch
# Rows as TRL's multi-task convention writes them: whole groups without a gold answer, single rollouts no function
# scores, a group with one scorable rollout.
trl_math = by_position([[1.0, None, 0.0, 1.0], [None, None, 1.0, None]])
trl_math.__name__ = "trl_math"
trl_format = by_position([[None, None, 1.0, 0.0], [None, 0.0, None, None]])
trl_format.__name__ = "trl_format"


@pytest.mark.slow
@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_all_none_rows_get_what_trl_gives_them(tmp_path, tiny_model_dir, scale_rewards):
    from trl import GRPOConfig, GRPOTrainer

    from dler import DLERTrainer

    common = dict(
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        num_generations=G,
        max_completion_length=8,
        report_to=[],
        reward_weights=[1.0, 0.5],
        scale_rewards=scale_rewards,
    )
    trl = GRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[trl_math, trl_format],
        args=GRPOConfig(str(tmp_path / "trl"), **common),
        train_dataset=addition_dataset(),
    )
    # the GRPO equivalent: no length shaping (an over-budget rollout keeps its reward), no dynamic sampling
    dler = DLERTrainer(
        model=tiny_model_dir,
        reward_funcs=[trl_math, trl_format],
        args=tiny_config(
            tmp_path / "dler", **common, dynamic_sampling=False, truncated_reward_scale=1.0, truncation_length=8
        ),
        train_dataset=addition_dataset(),
    )
    assert dler.args.advantage_normalization == {"group": "group", "batch": "batch_std", "none": "none"}[scale_rewards]
    ours, theirs = score(dler, (4, 5, 6, 7)), score(trl, (4, 5, 6, 7))
    assert ours["advantages"].tolist() == pytest.approx(theirs["advantages"].tolist(), abs=1e-5)
    # odd a, rollouts 1 and 4: no function scores them -> advantage 0 in both
    assert ours["advantages"][[4, 7, 12, 15]].tolist() == [0.0] * 4
    assert dler._metrics["train"]["frac_reward_zero_std"][-1] == trl._metrics["train"]["frac_reward_zero_std"][-1]
