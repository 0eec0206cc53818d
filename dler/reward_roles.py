"""Reward roles: which reward functions are the correctness signal the length penalty shapes, and how the other
functions join the shaped correctness afterwards, with TRL 1.16's semantics for rewards that are None.

TRL turns a reward function's None ("does not apply to this row") into NaN and combines the functions with a
weighted `nansum`; a row where every function returned None is unscorable: NaN, left out of the group baseline and
the batch statistics, advantage 0. DLER keeps exactly that, with one difference: the correctness functions are
summed first, shaped by the length penalty per group, and only then are the other functions (format, repetition,
...) added, so that "correct" (DA-DLER budgets, the correctness metric and filter, `correct_advantage_boost`) means
correct, not "formatted". Pure functions on tensors laid out as consecutive groups, one row per rollout.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
GROUP_STD_EPS = 1e-4  # added to the std, as TRL's GRPO


def reward_name(func) -> str:
    """The name TRL 1.16 gives a reward function (`GRPOTrainer.reward_func_names`), known before any model loads:
    a hub id or path's last part, a model's `_name_or_path`'s last part, else the callable's name."""
    from trl.trainer.utils import get_callable_name

    if isinstance(func, str):
        return func.rstrip("/").split("/")[-1]
    if isinstance(func, torch.nn.Module):
        return str(func.config._name_or_path).split("/")[-1]
    return get_callable_name(func)


def correctness_columns(names: list[str], selected: list[str] | None, weights: list[float] | None = None) -> list[int]:
    """Columns of the correctness functions among the reward functions `names` (their order): those `selected` by
    name, or the first when none is named. Each needs a positive weight: the length penalty assumes that more
    correctness is better."""
    if not names:
        raise ValueError(
            "No reward source provided. DLERTrainer needs at least one reward function (reward_funcs=...): the length "
            "penalty shapes the correctness reward per group, and without one there is nothing to shape (environments, "
            "which TRL lets own the reward, are refused). Pass e.g. reward_funcs=dler.rewards.MathReward()."
        )
    chosen = list(selected) if selected else [names[0]]
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise ValueError(
            f"correctness_rewards names {unknown}, which are not among this trainer's reward functions {names}. "
            "Name one or more of them (the function's __name__, or a reward model's last path component)."
        )
    if selected and any(names.count(name) > 1 for name in chosen):
        raise ValueError(
            f"correctness_rewards names {chosen}, but the reward functions {names} repeat a name: give each a "
            "distinct __name__ so the correctness function can be told apart."
        )
    columns = [names.index(name) for name in chosen]
    if weights is not None:
        if len(weights) != len(names):
            raise ValueError(
                f"reward_weights has {len(weights)} entries for {len(names)} reward functions {names}: give one "
                "weight per function, in the same order."
            )
        bad = [names[k] for k in columns if not weights[k] > 0]
        if bad:
            raise ValueError(
                f"reward_weights gives the correctness function(s) {bad} a weight <= 0: the length penalty assumes "
                "that more correctness is better. Give them a positive weight, or name another function in "
                "correctness_rewards."
            )
    return columns


def weighted_nansum(rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum of `rewards` (rows, functions) times `weights` over the functions, None (NaN) counting as absent, as TRL
    sums; NaN where every function of a row is NaN (unscorable)."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    total = (rewards * torch.as_tensor(weights, dtype=torch.float32)).nansum(dim=1)
    return torch.where(torch.isnan(rewards).all(dim=1), torch.nan, total)


def correctness_of(rewards: torch.Tensor, weights: torch.Tensor, columns: list[int]) -> torch.Tensor:
    """Correctness `c`: the weighted nansum of the correctness columns; NaN where all of them are None."""
    return weighted_nansum(torch.as_tensor(rewards)[:, columns], torch.as_tensor(weights)[columns])


def group_normalized_columns(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each column of `values` (rows, columns) standardised within each group as TRL's 'normalize_then_sum':
    `(x - nanmean) / (nanstd + 1e-4)`, Bessel-corrected over the group's non-NaN rows (NaN when fewer than 2; a
    group of one rollout has std 0). NaN stays NaN."""
    values = torch.as_tensor(values, dtype=torch.float32)
    grouped = values.view(-1, group_size, values.shape[1])
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    if group_size > 1:
        count = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
        var = torch.nanmean((grouped - mean) ** 2, dim=1, keepdim=True) * count / (count - 1)
        std = torch.where(count > 1, var.sqrt(), torch.nan)
    else:
        std = torch.zeros_like(mean)
    return ((grouped - mean) / (std + GROUP_STD_EPS)).view_as(values)


def combine_rewards(
    shaped: torch.Tensor,
    rewards: torch.Tensor,
    weights: torch.Tensor,
    columns: list[int],
    group_size: int,
    aggregation: str = "sum_then_normalize",
) -> torch.Tensor:
    """The reward the advantages are computed from: the shaped correctness `shaped` (the penalty's output on `c`,
    NaN where `c` is) joined by the other reward functions of `rewards` (rows, functions) with their `weights`.

    'sum_then_normalize' (TRL's default): `shaped + sum_k w_k r_k` over the other functions, None absent (nansum).
    'normalize_then_sum' (TRL's GDPO option): the shaped correctness in the correctness functions' own units
    (`shaped / W`, W their total weight) and each other function are standardised within their group, then summed
    with weights W and `w_k`; the configured advantage normalisation follows. Either way a row whose every reward
    is None is NaN."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    weights = torch.as_tensor(weights, dtype=torch.float32)
    shaped = torch.as_tensor(shaped, dtype=torch.float32).reshape(-1, 1)
    others = [k for k in range(rewards.shape[1]) if k not in columns]
    if aggregation == "sum_then_normalize":
        parts = torch.cat([shaped, rewards[:, others] * weights[others]], dim=1)
    elif aggregation == "normalize_then_sum":
        total_weight = weights[columns].sum().reshape(1)
        values = torch.cat([shaped / total_weight, rewards[:, others]], dim=1)
        parts = group_normalized_columns(values, group_size) * torch.cat([total_weight, weights[others]])
    else:
        raise ValueError(f"multi_objective_aggregation must be one of {list(AGGREGATIONS)}, got {aggregation!r}")
    return torch.where(torch.isnan(rewards).all(dim=1), torch.nan, parts.nansum(dim=1))
