"""Advantage estimators: DLER's batch-wise normalisation and the GRPO baselines it replaces.

All functions are pure: rewards come laid out as consecutive groups of `group_size` rollouts (the layout
TRL uses) and one advantage per sequence comes back.
"""

from __future__ import annotations

import torch

WHITEN_EPS = 1e-8  # added to the variance, as verl's `masked_whiten`
GROUP_STD_EPS = 1e-4  # added to the std, as TRL's GRPO


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D (one reward per sequence), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards cannot be laid out as groups of group_size={group_size}")
    return rewards.view(-1, group_size)


def group_centered(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """`R_i - mean_group(R)`; a group of one rollout uses mean 0 (verl's `reinforce_plus_plus_baseline`)."""
    grouped = _grouped(rewards, group_size)
    if group_size == 1:
        return grouped.reshape(-1).clone()
    return (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)


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
    sequence weighted 1 (Bessel over the number of sequences). Returns float32, one value per sequence.
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
    n = weights.sum()
    if n <= 0:
        return torch.zeros_like(centered, dtype=torch.float32)
    mean = (centered * weights).sum() / n
    var = ((centered - mean) ** 2 * weights).sum() / n
    if n > 1:  # Bessel's correction; a single token has no spread to correct
        var = var * n / (n - 1)
    return ((centered - mean) / torch.sqrt(var + WHITEN_EPS)).to(torch.float32)


def group_normalized_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """GRPO's advantage: `(R - mean_group) / (std_group + 1e-4)`, std with Bessel's correction (as TRL)."""
    grouped = _grouped(rewards, group_size)
    centered = group_centered(rewards, group_size)
    if group_size == 1:
        return centered.to(torch.float32)
    std = grouped.std(dim=1, unbiased=True).repeat_interleave(group_size)
    return (centered / (std + GROUP_STD_EPS)).to(torch.float32)


def compute_advantages(
    rewards: torch.Tensor,
    group_size: int,
    normalization: str = "batch",
    lengths: torch.Tensor | None = None,
    weighting: str = "token",
    correct: torch.Tensor | None = None,
    correct_boost: float = 0.0,
) -> torch.Tensor:
    """One entry point for the trainer: `normalization` is "batch" (DLER), "group" (GRPO) or "none" (centred only).

    `correct_boost` is the released code's `correct_sample_advantage_boost_value`: added to the final advantage of
    every sample whose `correct` flag is set.
    """
    if normalization == "batch":
        advantages = batch_normalized_advantages(rewards, group_size, lengths=lengths, weighting=weighting)
    elif normalization == "group":
        advantages = group_normalized_advantages(rewards, group_size)
    elif normalization == "none":
        advantages = group_centered(rewards, group_size).to(torch.float32)
    else:
        raise ValueError(f"normalization must be 'batch', 'group' or 'none', got {normalization!r}")
    if correct_boost:
        if correct is None:
            raise ValueError("correct_boost needs the per-sample correctness flags (correct=...)")
        advantages = advantages + correct_boost * torch.as_tensor(correct, dtype=torch.float32).reshape(-1)
    return advantages
