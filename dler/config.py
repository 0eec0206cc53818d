"""`DLERConfig`: TRL's `GRPOConfig` plus the DLER recipe, with the paper's values as defaults, checked when built
(`dler.config_checks`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import GRPOConfig

from dler.budgets import parse_length_budgets
from dler.config_checks import (
    ADVANTAGE_NORMALIZATIONS,
    ADVANTAGE_WEIGHTINGS,
    EXHAUSTED_ACTIONS,
    KL_ESTIMATORS,
    SAMPLING_METRICS,
    check_choice,
    check_config,
    resolve_budget,
    resolve_reward_settings,
)
from dler.presets import OPTIMIZER_RECIPES


@dataclass
class DLERConfig(GRPOConfig):
    r"""Configuration for [`DLERTrainer`]: every [`~trl.GRPOConfig`] field, plus DLER's.

    Defaults follow the DLER paper (arXiv 2510.15110, Table 4). Where the released code differs, the field's help
    names its value. In TRL terms one paper step (512 prompts x 16 rollouts, mini-batches of 64 prompts) is one
    generation batch feeding `updates_per_generation=8` optimizer updates.

    The optimisation recipe and the length penalty are separate choices (the paper's Fig. 8 applies the DLER recipe
    to other penalties): `optimizer_recipe` fills in `advantage_normalization`, `epsilon_high` and
    `dynamic_sampling` when they are left unset, and `penalty` / `penalty_kwargs` pick the reward shaping.

    > Parameters whose defaults differ from [`~trl.GRPOConfig`]: `num_generations=16`, `max_completion_length=4000`,
    > `beta=0.0005`, `epsilon_high=0.28` (DLER recipe), `delta=10.0`, `vllm_importance_sampling_correction=False`,
    > `use_bias_correction_kl=False`, `lr_scheduler_type="constant"`, `weight_decay=0.01`. docs/fidelity.md lists
    > every setting against the paper and the released run.
    """

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS + ["penalty_kwargs"]

    # ---- TRL fields set to the paper ----
    num_generations: int | None = field(
        default=16, metadata={"help": "Rollouts per prompt (the group size G). Paper: 16."}
    )
    max_completion_length: int | None = field(
        default=4000,
        metadata={
            "help": "Generation cap in tokens. Paper: the truncation length, 4000. Must be >= every budget; "
            "`truncation_length` defaults to it."
        },
    )
    beta: float = field(
        default=0.0005,
        metadata={"help": "KL coefficient against the reference model. Paper and released code: 0.0005."},
    )
    epsilon: float = field(default=0.2, metadata={"help": "Lower PPO clip: ratio >= 1 - epsilon. Paper: 0.2."})
    delta: float | None = field(
        default=10.0,
        metadata={
            "help": "Dual-clip: the ratio of a negative-advantage token counts at most this much (TRL's two-sided "
            "clip, the same bound as verl's `clip_ratio_c`). Released script: clip_ratio_c=10; Table 4 is silent."
        },
    )
    vllm_importance_sampling_correction: bool = field(
        default=False,
        metadata={
            "help": "TRL's vLLM-vs-trainer importance weights (on by default in TRL: a per-response weight that "
            "depends on length, the very thing DLER trains). The paper and the released run have none: off."
        },
    )
    use_bias_correction_kl: bool = field(
        default=False,
        metadata={
            "help": "TRL's KL bias correction (multiplies the KL term by the policy ratio). The released run's KL "
            "has no such factor: off. Must be off unless kl_estimator='k3'."
        },
    )
    kl_estimator: str = field(
        default="k2",
        metadata={
            "help": "Per-token KL penalty against the reference model (coefficient `beta`). 'k2' = 0.5 (log p - log "
            "p_ref)^2, the paper's Table 4 (`kl_loss_type mse`); 'low_var_kl' = k3 clamped to [-10, 10], the "
            "released run (verl's default); 'k3' = TRL's own. 'k2'/'low_var_kl' add beta x (estimator - k3) after "
            "TRL's loss, aggregated as any `loss_type` aggregates (Liger too). Need use_bias_correction_kl=False.",
            "choices": list(KL_ESTIMATORS),
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Prompt cap in tokens, applied after the chat template: longer prompts keep their last tokens "
            "(left truncation), and are counted and logged. Paper and released script: 1024. None: no cap."
        },
    )
    eval_temperature: float | None = field(
        default=None,
        metadata={
            "help": "Sampling temperature of evaluation during training (TRL samples eval at the training "
            "`temperature`). Released run: 0.6 on AIME-24. None: the training temperature."
        },
    )
    epsilon_high: float | None = field(
        default=None,
        metadata={
            "help": "Upper PPO clip (clip-higher): ratio <= 1 + epsilon_high. Unset: 0.28 with the DLER recipe "
            "(paper), `epsilon` with the GRPO recipe. Must be >= epsilon."
        },
    )
    loss_type: str = field(
        default="dapo",
        metadata={
            "help": "TRL's loss aggregation. 'dapo': token mean over the whole batch, as the paper; every TRL loss type works."
        },
    )
    learning_rate: float = field(default=1e-6, metadata={"help": "Paper: 1e-6, constant, no warm-up."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Paper: constant learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay. Paper: 0.01."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout temperature. Paper: 1.0 (top_p 1.0)."})

    # ---- the two independent choices ----
    optimizer_recipe: str = field(
        default="dler",
        metadata={
            "help": "'dler': batch-wise advantage normalisation, clip-higher (epsilon_high=0.28) and dynamic "
            "sampling. 'grpo': group normalisation, symmetric clip, no dynamic sampling. Fills in "
            "`advantage_normalization`, `epsilon_high` and `dynamic_sampling` when they are left unset.",
            "choices": list(OPTIMIZER_RECIPES),
        },
    )
    penalty: str = field(
        default="truncation",
        metadata={
            "help": "Length penalty, by its registered name (`dler.penalties.available_penalties()`): truncation "
            "(DLER), soft_overlong, cosine, kimi, laser, laser_d, laser_de, l1_exact, l1_max, thinkprune, efficient, "
            "shorterbetter, or a plugin's."
        },
    )
    penalty_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": 'Parameters of the penalty, e.g. {"alpha": 0.1} (a JSON string on the command line). For '
            "truncation, `truncated_reward_scale` is its own field."
        },
    )

    # ---- length budget and reward shaping ----
    truncation_length: int | None = field(
        default=None,
        metadata={
            "help": "Length budget in tokens (EOS included). A response longer than its budget, or cut off by "
            "`max_completion_length`, is over budget. Unset: `max_completion_length`, the paper's relation "
            "(budget = generation cap = 4000 for R1-Distill 1.5B/7B). Must not exceed `max_completion_length`."
        },
    )
    truncated_reward_scale: float = field(
        default=0.0,
        metadata={
            "help": "An over-budget response's reward is its correctness times this. 0.0 = paper; 0.1 = released "
            "code (verl `stop_properly_penalty.penalty_coef`)."
        },
    )
    length_budgets: list[str] | None = field(
        default=None,
        metadata={
            "help": "DA-DLER difficulty-aware budgets as 'MIN_ACCURACY:BUDGET' bands, e.g. ['0.5:2000']: a prompt "
            "whose group is right at least half the time gets 2000 tokens, others `truncation_length`. Accuracy is "
            "the fraction of the group's rollouts with positive correctness. Generation still runs to "
            "`max_completion_length`; the budget acts through the reward."
        },
    )
    correctness_rewards: list[str] | None = field(
        default=None,
        metadata={
            "help": "The reward functions measuring correctness, by name (`trainer.reward_func_names`): their "
            "weighted sum is the correctness c the length penalty shapes (and budgets, metrics, filter and boost "
            "read); the others (format, ...) are added after shaping, as TRL adds them. Unset: the first function."
        },
    )
    scale_rewards: str | None = field(
        default=None,
        metadata={
            "help": "TRL's reward scaling, as `advantage_normalization`: 'group'/True -> 'group', 'none'/False -> "
            "'none', 'batch' -> 'batch_std' (not DLER's whitening); refused if it contradicts an explicit one. "
            "Unset: `advantage_normalization` (or `optimizer_recipe`) decides."
        },
    )
    reward_timeout: float | None = field(
        default=600.0,
        metadata={
            "help": "Deadline in seconds for each call of a plain (synchronous) user reward function on one batch: a "
            "call still running then is interrupted in the main thread and stops training with an error naming the "
            "function, instead of hanging the run. dler.rewards.MathReward is not covered (it has its own per-answer "
            "deadlines in worker processes), nor are async functions or reward models. None or 0: no deadline."
        },
    )

    # ---- advantages ----
    advantage_normalization: str | None = field(
        default=None,
        metadata={
            "help": "Unset: from `scale_rewards` when set, else `optimizer_recipe`. 'batch' (DLER): centre within the "
            "group, then whiten over the whole training batch of every rank, after dynamic sampling. 'group': GRPO's "
            "per-group standardisation. 'batch_std': TRL's scale_rewards='batch' (group-centred, divided by the "
            "batch's reward std). 'none': group-centred only. Unscorable rollouts (every reward None) weigh 0 and "
            "get advantage 0, as in TRL.",
            "choices": list(ADVANTAGE_NORMALIZATIONS),
        },
    )
    advantage_weighting: str = field(
        default="token",
        metadata={
            "help": "Weights of the batch whitening. 'token' (released code): each sequence counts once per "
            "response token, Bessel-corrected variance, + 1e-8. 'sequence': the paper's formula, one weight per "
            "sequence.",
            "choices": list(ADVANTAGE_WEIGHTINGS),
        },
    )
    correct_advantage_boost: float = field(
        default=0.0,
        metadata={
            "help": "Added to the final advantage of every correct rollout (released code's "
            "`correct_sample_advantage_boost_value`: 0 in one script, 0.1 in another). Paper: 0."
        },
    )
    updates_per_generation: int = field(
        default=8,
        metadata={
            "help": "Optimizer updates fed by one generation batch (paper: 512 prompts per generation, mini-batches "
            "of 64 -> 8). Sets `steps_per_generation = gradient_accumulation_steps * updates_per_generation` when "
            "neither `steps_per_generation` nor `generation_batch_size` is given. With 1 the PPO ratio stays 1 and "
            "clip-higher never acts."
        },
    )

    # ---- dynamic sampling ----
    dynamic_sampling: bool | None = field(
        default=None,
        metadata={
            "help": "Unset: from `optimizer_recipe` (on for DLER, off for GRPO). Drop prompts whose group carries no signal (all rollouts equal), generate more prompts until "
            "the batch is full, then cut it to exactly the batch size."
        },
    )
    dynamic_sampling_metric: str = field(
        default="reward",
        metadata={
            "help": "What must differ within a group's scorable rollouts for it to be kept: 'reward' (paper: the "
            "shaped reward, other reward functions included) or 'correctness' (released code: raw correctness before "
            "the length penalty). With budgets below the generation cap, 'correctness' drops all-correct groups whose "
            "shaped rewards still differ.",
            "choices": list(SAMPLING_METRICS),
        },
    )
    prompts_per_round: int | None = field(
        default=None,
        metadata={
            "help": "Prompts generated per dynamic-sampling round, over all ranks (a multiple of the process count). "
            "Every round, the first included, then draws from DLER's seeded, resumable prompt stream, so each prompt "
            "comes once per epoch. Released run: 384 (`gen_batch_size`, rounds until 512 groups are kept); paper: "
            "512. None: rounds of the generation batch's size, the first from TRL's sampler."
        },
    )
    max_sampling_rounds: int = field(
        default=0,
        metadata={
            "help": "Generation rounds per batch before giving up; 0 = no limit (released code), except that a batch "
            "whose rounds drew as many prompts as the training set holds without filling up stops the same way."
        },
    )
    dynamic_sampling_exhausted: str = field(
        default="error",
        metadata={
            "help": "When `max_sampling_rounds` runs out: 'error' stops with the counts of all-zero and "
            "all-positive groups; 'partial' trains on the groups kept so far.",
            "choices": list(EXHAUSTED_ACTIONS),
        },
    )

    # ---- generating less (docs/dynamic_sampling.md); all off = the paper's rule ----
    adaptive_rounds: bool = field(
        default=False,
        metadata={
            "help": "Size each step's first generation round from the recent fraction of kept groups, so most steps "
            "need one round: the sampler's prompts plus extra ones from the prompt stream. A later round of the "
            "step, if any, is sized the same way for the groups still missing, at the kept fraction seen so far "
            "(this step's rounds folded into the moving average; alone in the run's first step, which has no "
            "average yet). No round is smaller than the sampler's batch. Off (paper): every round has the "
            "sampler's batch size. Needs dynamic_sampling."
        },
    )
    max_round_factor: float = field(
        default=4.0,
        metadata={
            "help": "With adaptive_rounds: any round (first or later) holds at most this many times the "
            "sampler's prompts. Must be >= 1."
        },
    )
    round_confidence: float = field(
        default=1.0,
        metadata={
            "help": "With adaptive_rounds: safety margin, in binomial standard deviations, on the number of kept "
            "groups each round is sized for (0 = sized for the expected count, about half the steps then need "
            "a second round). Must be >= 0."
        },
    )
    kept_fraction_decay: float = field(
        default=0.8,
        metadata={
            "help": "With adaptive_rounds: weight of the past in the moving average of the kept fraction "
            "(0 = last step only); a later round folds the step's rounds so far in with the same weight. In [0, 1)."
        },
    )
    max_carry_age: int = field(
        default=0,
        metadata={
            "help": "Keep surplus groups with signal for later batches instead of discarding them, for at most this "
            "many generation batches (1 = the next batch only); older ones are dropped and counted. They train with "
            "the log-probs of the policy that generated them (computed when they are left over), so the batch must "
            "carry old log-probs at all: needs gradient_accumulation_steps not a multiple of steps_per_generation * "
            "num_iterations (e.g. updates_per_generation >= 2), and no vLLM importance sampling. 0 (paper): surplus "
            "discarded."
        },
    )
    skip_no_signal_prompts: bool = field(
        default=False,
        metadata={
            "help": "Skip prompts whose last `skip_after` groups all had no signal (GRESO-style), except with "
            "probability `skip_exploration` each time they come up. Every round then draws its prompts from DLER's "
            "seeded prompt stream (keyed by dataset index, the same on every rank) instead of TRL's sampler. Off "
            "(paper): every prompt is generated."
        },
    )
    skip_after: int = field(
        default=2,
        metadata={
            "help": "With skip_no_signal_prompts: consecutive groups without signal before a prompt is skipped. >= 1."
        },
    )
    skip_exploration: float = field(
        default=0.05,
        metadata={
            "help": "With skip_no_signal_prompts: probability that a skipped prompt is generated anyway when it comes "
            "up, so no prompt is excluded forever. In (0, 1]."
        },
    )

    def __post_init__(self):
        if isinstance(self.penalty_kwargs, str):  # from the command line; TRL's own parse names no field
            try:
                self.penalty_kwargs = json.loads(self.penalty_kwargs) if self.penalty_kwargs.strip() else None
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"penalty_kwargs={self.penalty_kwargs!r} is not JSON ({error.msg} at character {error.pos}): give "
                    """an object, e.g. --penalty_kwargs '{"alpha": 0.1}'"""
                ) from None
        check_choice(self, "optimizer_recipe", OPTIMIZER_RECIPES)
        resolve_reward_settings(self)  # before the recipe fills advantage_normalization: scale_rewards may set it
        for name, value in OPTIMIZER_RECIPES[self.optimizer_recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        # One paper step = one generation batch feeding several optimizer updates; only then can the PPO ratio
        # leave 1 and clip-higher act. The one place steps_per_generation is derived (recipes set the two factors);
        # TRL derives generation_batch_size from it.
        if self.updates_per_generation < 1:
            raise ValueError(f"updates_per_generation must be >= 1, got {self.updates_per_generation}")
        if self.steps_per_generation is None and self.generation_batch_size is None:
            self.steps_per_generation = self.gradient_accumulation_steps * self.updates_per_generation
        super().__post_init__()
        resolve_budget(self)
        self.length_budgets = [f"{a}:{b}" for a, b in self.budget_bands] if self.length_budgets else None
        self.penalty_kwargs = dict(self.penalty_kwargs or {})
        check_config(self)
        self.build_penalty()  # unknown names and parameters fail here, before any model is loaded

    def build_penalty(self):
        """The length penalty these settings describe (a `dler.penalties.LengthPenalty`)."""
        from dler.penalties import get_penalty

        params = dict(self.penalty_kwargs)
        if self.penalty == "truncation":
            params.setdefault("truncated_reward_scale", self.truncated_reward_scale)
        penalty = get_penalty(self.penalty, **params)
        penalty.check_cap(self.max_completion_length)
        return penalty

    @property
    def budget_bands(self) -> list[tuple[float, int]]:
        """`length_budgets` parsed into (min_accuracy, budget) bands, highest threshold first."""
        return parse_length_budgets(self.length_budgets)

    @property
    def keeps_behaviour_logps(self) -> bool:
        """Whether TRL stores `old_per_token_logps` (the generating policy's) with each batch, as in its
        `_generate_and_score_completions`, for a reason other than vLLM importance sampling."""
        return self.gradient_accumulation_steps % (self.steps_per_generation * self.num_iterations) != 0
