"""Named bundles of settings: the optimisation recipes (`optimizer_recipe`) and the DLER presets (`--preset`), each
value with its source, and the fields that decide the objective.

docs/fidelity.md is the same table for people.
"""

from __future__ import annotations

OPTIMIZER_RECIPES = {
    # what each recipe sets when the field is left unset (None); an explicit value always wins
    "dler": {"advantage_normalization": "batch", "epsilon_high": 0.28, "dynamic_sampling": True},
    "grpo": {"advantage_normalization": "group", "epsilon_high": None, "dynamic_sampling": False},
}

TABLE_4 = "paper Table 4"
RELEASED = "released script (NVlabs/DLER dler_slurm.sh on its patched verl)"

# Every value a preset sets, with its source. Both presets fix what TRL 1.16 would otherwise change about the objective
# (importance weights, KL form, prompt length); they differ where the paper and the released run differ.
_SHARED = {
    "vllm_importance_sampling_correction": (
        False,
        "paper and released run: no vLLM importance weights (rollout_is off)",
    ),
    "delta": (10.0, f"{RELEASED}: dual-clip clip_ratio_c=10 (Table 4 is silent)"),
    "use_bias_correction_kl": (False, f"{RELEASED}: plain KL, no ratio factor"),
    "max_prompt_length": (1024, f"{TABLE_4} and {RELEASED}: max_prompt_length 1024, left-truncated"),
    "eval_temperature": (0.6, f"{RELEASED}: validation sampling T=0.6, top_p 1.0"),
    "num_generations_eval": (4, f"{RELEASED}: validation n=4"),
    "eval_every_generations": (5, f"{RELEASED}: validation every 5 generation steps (test_freq=5)"),
}
PRESETS = {
    "paper": {
        **_SHARED,
        "truncated_reward_scale": (0.0, "paper Sec. 3: a response over the budget earns 0"),
        "advantage_weighting": ("sequence", "paper Eq. (batch normalisation): one weight per sequence"),
        "dynamic_sampling_metric": ("reward", f"{TABLE_4}: filter_groups metric seq_reward"),
        "kl_estimator": ("k2", f"{TABLE_4}: kl_loss_type mse"),
        "prompts_per_round": ("generation", "paper: every round is a whole generation batch (512 prompts)"),
        "grader": ("dler", "paper Sec. 4: requires </think>, grades the last \\boxed{} after it"),
    },
    "released": {
        **_SHARED,
        "truncated_reward_scale": (0.1, f"{RELEASED}: stop_properly_penalty.penalty_coef=0.1"),
        "advantage_weighting": ("token", f"{RELEASED}: masked_whiten weights every response token"),
        "dynamic_sampling_metric": ("correctness", f"{RELEASED}: groups filtered on raw correctness"),
        "kl_estimator": ("low_var_kl", f"{RELEASED}: kl_loss_type low_var_kl (k3 clamped to +-10), coef 0.0005"),
        "prompts_per_round": (384, f"{RELEASED}: gen_batch_size=384 prompts per round until 512 groups are kept"),
        "grader": ("released", f"{RELEASED}: its reward function (math-verify OR string OR sympy)"),
    },
    "none": {},  # recipes of other papers, which the DLER paper/released split does not describe
}

# TRL defaults the presets override and the fields that decide the objective: the dry run shows where each came from,
# and a restart compares them (dler.training.run_settings).
OBJECTIVE = (
    "learning_rate",
    "lr_scheduler_type",
    "weight_decay",
    "max_grad_norm",
    "beta",
    "kl_estimator",
    "use_bias_correction_kl",
    "epsilon",
    "epsilon_high",
    "delta",
    "loss_type",
    "vllm_importance_sampling_correction",
    "num_generations",
    "temperature",
    "top_p",
    "max_prompt_length",
    "max_completion_length",
    "truncation_length",
    "truncated_reward_scale",
    "length_budgets",
    "optimizer_recipe",
    "correctness_rewards",
    "reward_weights",
    "multi_objective_aggregation",
    "scale_rewards",
    "penalty",
    "penalty_kwargs",
    "advantage_normalization",
    "advantage_weighting",
    "correct_advantage_boost",
    "dynamic_sampling",
    "dynamic_sampling_metric",
    "prompts_per_round",
    "max_sampling_rounds",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "max_steps",
    "eval_strategy",
    "eval_steps",
    "num_generations_eval",
    "eval_temperature",
    "per_device_eval_batch_size",
    "grader",
    "use_vllm",
    "vllm_mode",
    "save_steps",
    "seed",
)


def resolve_preset(name: str, prompts_per_generation: int, dynamic_sampling: bool) -> dict[str, tuple]:
    """The preset's (value, source) per field, with `prompts_per_round` resolved against the batch (and left out when
    dynamic sampling is off, since there are no rounds then)."""
    preset = dict(PRESETS[name])
    if "prompts_per_round" in preset:
        value, source = preset.pop("prompts_per_round")
        if dynamic_sampling:
            preset["prompts_per_round"] = (prompts_per_generation if value == "generation" else value, source)
    return preset
