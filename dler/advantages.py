"""Advantage estimators: DLER's batch-wise normalisation and the GRPO baselines it replaces.

All functions are pure: rewards come laid out as consecutive groups of `group_size` rollouts (the layout
TRL uses) and one advantage per sequence comes back. A NaN reward is an unscorable rollout (every reward function
returned None, TRL 1.16's convention): it is left out of the group mean and of every batch statistic (weight 0),
and its advantage is 0, as TRL's.
"""

from __future__ import annotations

import torch

WHITEN_EPS = 1e-8  # added to the variance, as verl's `masked_whiten`
GROUP_STD_EPS = 1e-4  # added to the std, as TRL's GRPO
NORMALIZATIONS = ("batch", "group", "batch_std", "none")


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D (one reward per sequence), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards cannot be laid out as groups of group_size={group_size}")
    return rewards.view(-1, group_size)


def nanstd(values: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Standard deviation over the non-NaN entries, Bessel-corrected; NaN when fewer than 2 (TRL's `nanstd`)."""
    if dim is None:
        values, dim = values.reshape(-1), 0
    count = (~torch.isnan(values)).sum(dim=dim, keepdim=True)
    var = torch.nanmean((values - torch.nanmean(values, dim=dim, keepdim=True)) ** 2, dim=dim, keepdim=True)
    std = torch.where(count > 1, (var * count / (count - 1)).sqrt(), torch.nan)
    return std.squeeze(dim)


def group_centered(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """`R_i - mean_group(R)` over the group's scorable rollouts (NaN stays NaN); a group of one rollout uses mean 0
    (verl's `reinforce_plus_plus_baseline`)."""
    grouped = _grouped(rewards, group_size)
    if group_size == 1:
        return grouped.reshape(-1).clone()
    return (grouped - torch.nanmean(grouped, dim=1, keepdim=True)).reshape(-1)


def batch_normalized_advantages(
    rewards: torch.Tensor,
    group_size: int,
    lengths: torch.Tensor | None = None,
    weighting: str = "token",
) -> torch.Tensor:
    """DLER's advantage: centre within each group, then whiten over the whole training batch.

    `weighting="token"` reproduces the released code (verl `masked_whiten` over the response mask): each sequence
    counts once per response token, the variance is Bessel-corrected over the token count `n`, and
    `A_norm = (A - mu) / sqrt(var + 1e-8)`. `weighting="sequence"` is the paper's formula: the same with every
    sequence weighted 1 (Bessel over the number of sequences). Unscorable (NaN) rollouts weigh 0 and get 0.
    Returns float32, one value per sequence.
    """
    centered = group_centered(rewards, group_size)
    if weighting == "token":
        if lengths is None:
            raise ValueError("weighting='token' needs the response lengths in tokens (lengths=...)")
        weights = torch.as_tensor(lengths, dtype=torch.float64).reshape(-1)
        if weights.shape != centered.shape:
            raise ValueError(f"lengths has {weights.numel()} entries, rewards has {centered.numel()}")
        if (weights < 0).any():
            raise ValueError("lengths must be non-negative")
    elif weighting == "sequence":
        weights = torch.ones_like(centered)
    else:
        raise ValueError(f"weighting must be 'token' or 'sequence', got {weighting!r}")
    scorable = ~torch.isnan(centered)
    weights = torch.where(scorable, weights, 0.0)
    centered = torch.where(scorable, centered, 0.0)
    n = weights.sum()
    if n <= 0:
        return torch.zeros_like(centered, dtype=torch.float32)
    mean = (centered * weights).sum() / n
    var = ((centered - mean) ** 2 * weights).sum() / n
    if n > 1:  # Bessel's correction; a single token has no spread to correct
        var = var * n / (n - 1)
    return torch.where(scorable, (centered - mean) / torch.sqrt(var + WHITEN_EPS), 0.0).to(torch.float32)


def group_normalized_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """GRPO's advantage: `(R - mean_group) / (std_group + 1e-4)`, std with Bessel's correction over the group's
    scorable rollouts (as TRL's `scale_rewards="group"`; 0 where fewer than 2 are scorable)."""
    grouped = _grouped(rewards, group_size)
    centered = group_centered(rewards, group_size)
    if group_size == 1:
        return centered.nan_to_num(nan=0.0).to(torch.float32)
    std = nanstd(grouped, dim=1).repeat_interleave(group_size)
    return (centered / (std + GROUP_STD_EPS)).nan_to_num(nan=0.0).to(torch.float32)


def batch_std_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """TRL's `scale_rewards="batch"` (PPO-Lite): `(R - mean_group) / (std_batch(R) + 1e-4)`, the std of the batch's
    rewards themselves (not of the centred values), Bessel-corrected over the scorable rollouts. Not DLER's
    batch whitening, which also re-centres and uses the centred values' spread."""
    rewards = _grouped(rewards, group_size).reshape(-1)
    std = nanstd(rewards) if rewards.numel() > 1 else torch.zeros((), dtype=torch.float64)
    return (group_centered(rewards, group_size) / (std + GROUP_STD_EPS)).nan_to_num(nan=0.0).to(torch.float32)


def compute_advantages(
    rewards: torch.Tensor,
    group_size: int,
    normalization: str = "batch",
    lengths: torch.Tensor | None = None,
    weighting: str = "token",
    correct: torch.Tensor | None = None,
    correct_boost: float = 0.0,
) -> torch.Tensor:
    """One entry point for the trainer: `normalization` is "batch" (DLER's whitening), "group" (GRPO),
    "batch_std" (TRL's `scale_rewards="batch"`) or "none" (centred only). Unscorable (NaN) rewards get 0.

    `correct_boost` is the released code's `correct_sample_advantage_boost_value`: added to the final advantage of
    every sample whose `correct` flag is set.
    """
    if normalization == "batch":
        advantages = batch_normalized_advantages(rewards, group_size, lengths=lengths, weighting=weighting)
    elif normalization == "group":
        advantages = group_normalized_advantages(rewards, group_size)
    elif normalization == "batch_std":
        advantages = batch_std_advantages(rewards, group_size)
    elif normalization == "none":
        advantages = group_centered(rewards, group_size).nan_to_num(nan=0.0).to(torch.float32)
    else:
        raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    if correct_boost:
        if correct is None:
            raise ValueError("correct_boost needs the per-sample correctness flags (correct=...)")
        advantages = advantages + correct_boost * torch.as_tensor(correct, dtype=torch.float32).reshape(-1)
    return advantages
