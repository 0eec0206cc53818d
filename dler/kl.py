"""Per-token KL penalty estimators against the reference policy (Schulman's k1/k2/k3 family).

TRL adds `beta * k3` to its per-token loss; DLER's paper (Table 4: `kl_loss_type mse`) uses k2 and its released run
verl's `low_var_kl` (k3 clamped to +-10). The trainer adds `beta * (estimator - k3)` after TRL's loss, aggregated as
the configured `loss_type` aggregates (`aggregate_like_trl`), so these functions give both terms from the same
log-probs.
"""

from __future__ import annotations

import torch

LOW_VAR_KL_CLAMP = 10.0  # verl's low_var_kl bound


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """`exp(r - l) - (r - l) - 1` with l the policy's and r the reference's log-prob: TRL's estimator, >= 0."""
    diff = ref_logps - logps
    return torch.exp(diff) - diff - 1


def kl_k2(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """`0.5 (l - r)^2`: verl's 'mse' KL, the paper's Table 4."""
    return 0.5 * (logps - ref_logps).square()


def kl_low_var(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 clamped to [-10, 10]: verl's `low_var_kl`, the released run's (no gradient where the clamp binds)."""
    return kl_k3(logps, ref_logps).clamp(min=-LOW_VAR_KL_CLAMP, max=LOW_VAR_KL_CLAMP)


ESTIMATORS = {"k2": kl_k2, "low_var_kl": kl_low_var, "k3": kl_k3}  # paper, released run, TRL's own


def kl_penalty_terms(
    logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's k3 term and the `estimator`'s, per token, both differentiable in `logps`."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {list(ESTIMATORS)}")
    return kl_k3(logps, ref_logps), ESTIMATORS[estimator](logps, ref_logps)


# TRL 1.16's `GRPOTrainer._compute_loss` loss types. Each adds `beta * k3` per token and then aggregates
# `per_token_loss` linearly for a fixed mask, so one correction term, aggregated the same way, swaps the estimator.
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "vespo", "luspo")


def aggregate_like_trl(
    values: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    *,
    training: bool,
    accumulation_steps: int = 1,
    steps_per_generation: int = 1,
    num_items_in_batch: torch.Tensor | None = None,
    num_processes: int = 1,
    max_completion_length: int | None = None,
) -> torch.Tensor:
    """A (B, T) per-token tensor reduced to the scalar TRL's `loss_type` makes of `per_token_loss`, normalisers
    included: 'grpo'/'sapo' mean per sequence then over sequences, 'bnpo' mean over the tokens, 'dr_grpo' sum over
    B x `max_completion_length`, 'luspo' sum per sequence then mean, each divided by `accumulation_steps` in
    training; 'dapo'/'cispo'/'vespo' sum over `num_items_in_batch` / `num_processes`, rescaled in training from the
    generation batch to one accumulation window (x `accumulation_steps` / `steps_per_generation`)."""
    masked = values * mask
    accumulation = accumulation_steps if training else 1.0  # TRL: no accumulation in eval
    if loss_type in ("grpo", "sapo"):
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type 'dr_grpo' normalises by max_completion_length: pass it")
        return masked.sum() / (values.size(0) * max_completion_length) / accumulation
    if loss_type == "luspo":
        return masked.sum(-1).mean() / accumulation
    if loss_type in ("dapo", "cispo", "vespo"):
        if num_items_in_batch is None:
            raise ValueError(f"loss_type {loss_type!r} normalises by num_items_in_batch: pass it")
        normalizer = num_items_in_batch.clamp(min=1.0) / num_processes
        if training:
            normalizer = normalizer * accumulation_steps / steps_per_generation
        return masked.sum() / normalizer
    raise ValueError(f"unknown loss_type {loss_type!r}; the KL correction knows {list(LOSS_TYPES)}")
