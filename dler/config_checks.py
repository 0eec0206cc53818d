"""The values and combinations `DLERConfig` refuses, checked once when it is built, each error naming the field and
the fix. Checks that belong to a length penalty's own parameters are the penalty's (`DLERConfig.build_penalty`)."""

from __future__ import annotations

import warnings

from dler.advantages import NORMALIZATIONS as ADVANTAGE_NORMALIZATIONS
from dler.kl import ESTIMATORS as KL_ESTIMATORS
from dler.kl import LOSS_TYPES
from dler.reward_roles import AGGREGATIONS

ADVANTAGE_WEIGHTINGS = ("token", "sequence")
SAMPLING_METRICS = ("reward", "correctness")
EXHAUSTED_ACTIONS = ("error", "partial")


def check_choice(config, name: str, allowed) -> None:
    value = getattr(config, name)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {list(allowed)}")


# TRL's scale_rewards (its bool aliases included) and the advantage_normalization that does what TRL documents for it
SCALE_REWARDS = {"group": "group", "none": "none", "batch": "batch_std"}
SCALE_REWARDS_ALIASES = {True: "group", False: "none", "true": "group", "false": "none"}


def resolve_reward_settings(c) -> None:
    """Before the recipe fills its fields: `scale_rewards` (TRL's names and bool aliases) selects the matching
    `advantage_normalization` when that is unset, and is refused when it contradicts an explicit one;
    `correctness_rewards` given as one name becomes a list."""
    if isinstance(c.correctness_rewards, str):
        c.correctness_rewards = [c.correctness_rewards]
    if c.correctness_rewards is not None and (
        not c.correctness_rewards or not all(isinstance(n, str) and n for n in c.correctness_rewards)
    ):
        raise ValueError(
            f"correctness_rewards={c.correctness_rewards!r}: give reward function names (e.g. ['math_correctness']) "
            "or leave it unset for the first reward function"
        )
    scale = c.scale_rewards
    if scale is None:
        return
    scale = SCALE_REWARDS_ALIASES.get(scale.lower() if isinstance(scale, str) else scale, scale)
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={c.scale_rewards!r} is not one of {list(SCALE_REWARDS)} (or True/False)")
    c.scale_rewards, implied = scale, SCALE_REWARDS[scale]
    if c.advantage_normalization is None:
        c.advantage_normalization = implied
    elif c.advantage_normalization != implied:
        raise ValueError(
            f"scale_rewards={scale!r} (TRL's {'batch std scaling' if scale == 'batch' else scale + ' scaling'}, "
            f"advantage_normalization={implied!r}) contradicts advantage_normalization="
            f"{c.advantage_normalization!r}. Set one of the two: advantage_normalization='batch' is DLER's batch "
            "whitening, which no scale_rewards value means."
        )


def resolve_budget(c) -> None:
    """`truncation_length` unset: the generation cap, the paper's relation (budget = cap = 4000)."""
    if c.truncation_length is None:
        if c.max_completion_length is None:
            raise ValueError(
                "truncation_length is unset and so is max_completion_length: set max_completion_length (the "
                "generation cap; the length budget defaults to it) or truncation_length"
            )
        c.truncation_length = c.max_completion_length


def check_config(c) -> None:
    """Every check on a built `DLERConfig` `c` (its TRL fields resolved, `steps_per_generation` derived)."""
    check_choice(c, "advantage_normalization", ADVANTAGE_NORMALIZATIONS)
    check_choice(c, "advantage_weighting", ADVANTAGE_WEIGHTINGS)
    check_choice(c, "dynamic_sampling_metric", SAMPLING_METRICS)
    check_choice(c, "dynamic_sampling_exhausted", EXHAUSTED_ACTIONS)
    check_choice(c, "multi_objective_aggregation", AGGREGATIONS)

    if c.epsilon_high is not None and c.epsilon_high < c.epsilon:
        raise ValueError(
            f"epsilon_high ({c.epsilon_high}) < epsilon ({c.epsilon}): clip-higher widens the upper bound. "
            "Set epsilon_high >= epsilon (paper: epsilon=0.2, epsilon_high=0.28)."
        )
    if c.truncation_length < 1:
        raise ValueError(f"truncation_length must be a positive number of tokens, got {c.truncation_length}")
    cap = c.max_completion_length
    budgets = [("truncation_length", c.truncation_length)]
    budgets += [(f"length_budgets '{a}:{b}'", b) for a, b in c.budget_bands]
    for name, budget in budgets:
        if cap is not None and budget > cap:
            raise ValueError(
                f"{name} = {budget} tokens is above max_completion_length = {cap}: the budget could never bind. "
                f"Raise max_completion_length to at least {budget} or lower the budget."
            )
    if c.mask_truncated_completions:
        raise ValueError(
            "mask_truncated_completions=True drops truncated responses from the loss; DLER must train on them "
            "with their penalised reward. Set mask_truncated_completions=False."
        )
    _check_kl(c)
    if c.max_prompt_length is not None and c.max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be a positive number of tokens or None, got {c.max_prompt_length}")
    if c.eval_temperature is not None and c.eval_temperature <= 0:
        raise ValueError(f"eval_temperature must be > 0 (sampling), got {c.eval_temperature}; None uses `temperature`")
    if c.prompts_per_round is not None:
        if not c.dynamic_sampling:
            raise ValueError("prompts_per_round sizes dynamic-sampling rounds: set dynamic_sampling=True or unset it")
        if c.prompts_per_round < 1 or c.prompts_per_round % c.world_size:
            raise ValueError(
                f"prompts_per_round={c.prompts_per_round} must be a positive multiple of the {c.world_size} "
                "processes (each rank generates an equal share of every round)"
            )
    if c.reward_timeout is not None and not c.reward_timeout >= 0:
        raise ValueError(
            f"reward_timeout must be a number of seconds > 0, or None or 0 for no deadline, got {c.reward_timeout}"
        )
    if c.max_sampling_rounds < 0:
        raise ValueError(f"max_sampling_rounds must be >= 0 (0 = no limit), got {c.max_sampling_rounds}")

    _check_generating_less(c)
    _check_batch_layout(c)


def _check_kl(c) -> None:
    """The estimator's correction (dler/kl_loss.py) works under every TRL 1.16 loss type and with Liger, whose
    kernels TRL 1.16 applies to the model's layers only (no fused loss: the per-token log-probs stay exposed)."""
    check_choice(c, "kl_estimator", KL_ESTIMATORS)
    if c.loss_type not in LOSS_TYPES:  # TRL itself would fail only at the first training step
        raise ValueError(f"loss_type={c.loss_type!r} is not one of TRL 1.16's loss types {list(LOSS_TYPES)}")
    if c.kl_estimator == "k3" or c.beta == 0.0:
        return
    if c.use_bias_correction_kl:
        raise ValueError(
            f"kl_estimator={c.kl_estimator!r} replaces TRL's plain k3 term, which use_bias_correction_kl=True "
            "multiplies by the policy ratio. Set use_bias_correction_kl=False or kl_estimator='k3'."
        )


def _check_generating_less(c) -> None:
    enabled = [
        name
        for name, on in (
            ("adaptive_rounds", c.adaptive_rounds),
            ("max_carry_age", c.max_carry_age > 0),
            ("skip_no_signal_prompts", c.skip_no_signal_prompts),
        )
        if on
    ]
    if enabled and not c.dynamic_sampling:
        raise ValueError(f"{', '.join(enabled)} act on dynamic sampling: set dynamic_sampling=True or turn them off")
    if c.max_round_factor < 1.0:
        raise ValueError(f"max_round_factor must be >= 1 (a cap on the enlargement), got {c.max_round_factor}")
    if c.round_confidence < 0.0:
        raise ValueError(f"round_confidence must be >= 0 standard deviations, got {c.round_confidence}")
    if not 0.0 <= c.kept_fraction_decay < 1.0:
        raise ValueError(f"kept_fraction_decay must be in [0, 1), got {c.kept_fraction_decay}")
    if c.max_carry_age < 0:
        raise ValueError(f"max_carry_age must be >= 0 generation batches (0 = off), got {c.max_carry_age}")
    if c.skip_after < 1:
        raise ValueError(f"skip_after must be >= 1 consecutive groups without signal, got {c.skip_after}")
    if not 0.0 < c.skip_exploration <= 1.0:
        raise ValueError(
            f"skip_exploration must be in (0, 1], got {c.skip_exploration}: with 0 a skipped prompt would "
            "never be generated again"
        )
    if c.max_carry_age > 0 and not c.keeps_behaviour_logps:
        raise ValueError(
            f"max_carry_age={c.max_carry_age} trains on groups generated by an older policy, but with "
            f"gradient_accumulation_steps={c.gradient_accumulation_steps}, steps_per_generation="
            f"{c.steps_per_generation} and num_iterations={c.num_iterations} TRL keeps no log-probs of the "
            "generating policy (it treats every sample as on-policy). Set updates_per_generation >= 2 (or "
            "steps_per_generation > gradient_accumulation_steps) or max_carry_age=0."
        )
    if c.max_carry_age > 0 and c.use_vllm and c.vllm_importance_sampling_correction:
        raise ValueError(
            f"max_carry_age={c.max_carry_age} with vllm_importance_sampling_correction: TRL would weigh a "
            "carried group by the ratio of today's policy to vLLM's old sampler, not the one it was generated "
            "with. Set vllm_importance_sampling_correction=False (the paper's and the released run's) or "
            "max_carry_age=0."
        )


def _check_batch_layout(c) -> None:
    # Every prompt's group must live on one rank: the penalty reads a whole group, and dynamic sampling keeps or
    # moves whole groups.
    per_rank = c.per_device_train_batch_size * c.steps_per_generation
    if per_rank % c.num_generations != 0:
        raise ValueError(
            f"The per-rank generation batch (per_device_train_batch_size={c.per_device_train_batch_size} x "
            f"steps_per_generation={c.steps_per_generation} = {per_rank}) is not a multiple of "
            f"num_generations={c.num_generations}, so a prompt's group would be split across ranks. Make "
            "per_device_train_batch_size * steps_per_generation a multiple of num_generations."
        )
    if c.do_eval and c.eval_strategy != "no":
        group = c.num_generations_eval or c.num_generations
        if c.per_device_eval_batch_size % group != 0:
            raise ValueError(
                f"per_device_eval_batch_size ({c.per_device_eval_batch_size}) must be a multiple of the eval "
                f"group size ({group}) so that each prompt's group lives on one rank."
            )
    if c.num_iterations == 1 and c.steps_per_generation == c.gradient_accumulation_steps:
        warnings.warn(
            "One generation batch feeds a single optimizer update, so the PPO ratio is always 1 and clip-higher "
            "(epsilon_high) never acts. The paper feeds 8 updates per generation: set updates_per_generation=8.",
            stacklevel=4,
        )
