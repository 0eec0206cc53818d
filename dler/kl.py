"""Per-token KL penalty estimators against the reference policy (Schulman's k1/k2/k3 family).

TRL adds `beta * k3` to its per-token loss; DLER's paper (Table 4: `kl_loss_type mse`) uses k2 and its released run
verl's `low_var_kl` (k3 clamped to +-10). The trainer adds `beta * (estimator - k3)` after TRL's loss, so these
functions give both terms from the same log-probs.
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
