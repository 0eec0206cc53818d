"""L1 / LCPO (Aggarwal & Welleck 2025, "L1: Controlling How Long A Reasoning Model Thinks With Reinforcement
Learning", arXiv 2503.04697): the prompt asks for N tokens and the reward follows N.

Released code: cmu-l3/l1, `math_reward.py` (`math_reward_fn`, `get_delta_score_linear` for Exact,
`get_delta_score_linear_both` for Max), `main_ppo.py` (`RewardManager`), `scripts/train/run_l1_*.sh`.

Each prompt row carries its target in a column (`add_length_targets` samples one per row and writes the "Think
for N tokens." instruction into the prompt); the trainer must keep that column (TRL's GRPO default
`remove_unused_columns=False` does).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.params import param
from dler.penalties.registry import register_penalty

L1_PROMPT = "Think for {n} tokens."


def read_target(group: RolloutGroup, column: str, who: str) -> float:
    """The prompt's target length from `group.prompt[column]`; a clear error if it is missing or not positive."""
    if column not in group.prompt:
        raise ValueError(
            f"{who}: the prompt row has no column {column!r} with the target length (available fields: "
            f"{sorted(group.prompt) or 'none'}). Add one with dler.penalties.add_length_targets or set target_column."
        )
    value = group.prompt[column]
    try:
        target = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: column {column!r} must hold a number of tokens, got {value!r}") from None
    if not target > 0:
        raise ValueError(f"{who}: column {column!r} must hold a positive number of tokens, got {value!r}")
    return target


@register_penalty("l1_exact")
@dataclass(eq=False)
class L1ExactPenalty(LengthPenalty):
    """LCPO-Exact: `c - alpha * |n_target - L|` (Eq. 2). Paper and released training script
    (`reward_config.alpha=0.0003`): alpha = 0.0003; the 1/3000 in `get_delta_score_linear` is a default argument
    that the script overrides.

    A response cut by the cap is judged by its (capped) length, as in the released reward.
    """

    formula = "c - alpha * abs(n_target - L), n_target from the prompt's target column"
    reference = "L1 (LCPO), Aggarwal & Welleck 2025, arXiv 2503.04697"

    alpha: float = param(0.0003, ge=0.0)
    target_column: str = param("target_length", help="prompt column holding n_target")

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        target = read_target(group, self.target_column, "l1_exact")
        lengths = group.lengths.to(torch.float64)
        return (group.correctness.to(torch.float64) - self.alpha * (target - lengths).abs()).to(torch.float32)


@register_penalty("l1_max")
@dataclass(eq=False)
class L1MaxPenalty(LengthPenalty):
    """LCPO-Max: `c * clip(alpha * (n_target - L) + delta, 0, 1)` (Eq. 3).

    `variant="released"` is the released `get_delta_score_linear_both`, `(clip(a (n_target - L), -1, 1) + 1) / 2`,
    times c; its slope `a` is the run's `reward_config.alpha` (the 0.002 in its signature is a default argument),
    here `a = 2 * alpha`, which makes it the paper formula with delta = 0.5 (delta unused). The default
    alpha = 0.001 gives that default argument's a = 0.002. The released `math_reward_fn` adds the score to c under
    `linear_reward` and multiplies under `multiplier_reward`; the L1-Max script sets neither (they come from its
    extra arguments), so the repository does not say which trained L1-Max. dler multiplies, as the paper.
    """

    formula = "c * clip(alpha*(n_target - L) + delta, 0, 1); released: c * (clip(2 alpha (n_target-L), -1, 1) + 1)/2"
    reference = "L1 (LCPO), Aggarwal & Welleck 2025, arXiv 2503.04697"

    alpha: float = param(0.001, ge=0.0)
    delta: float = param(0.5)
    variant: str = param("paper", choices=("paper", "released"))
    target_column: str = param("target_length", help="prompt column holding n_target")

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        target = read_target(group, self.target_column, "l1_max")
        gap = target - group.lengths.to(torch.float64)
        if self.variant == "released":
            score = ((2.0 * self.alpha * gap).clamp(-1.0, 1.0) + 1.0) / 2.0
        else:
            score = (self.alpha * gap + self.delta).clamp(0.0, 1.0)
        return (group.correctness.to(torch.float64) * score).to(torch.float32)


def _with_instruction(prompt: Any, sentence: str) -> Any:
    if isinstance(prompt, str):
        return f"{prompt} {sentence}"
    if isinstance(prompt, Sequence) and prompt and all(isinstance(m, dict) for m in prompt):
        messages = [dict(m) for m in prompt]
        for message in reversed(messages):
            if message.get("role") == "user":
                if not isinstance(message.get("content"), str):
                    raise TypeError(f"add_length_targets: user message content must be text, got {message!r}")
                message["content"] = f"{message['content']} {sentence}"
                return messages
        raise ValueError("add_length_targets: the conversation has no user message to add the instruction to")
    raise TypeError(f"add_length_targets: prompt must be a string or a list of chat messages, got {prompt!r}")


def add_length_targets(
    dataset,
    targets: Iterable[int] = range(100, 4001),
    column: str = "target_length",
    seed: int = 0,
    prompt_column: str = "prompt",
    template: str | None = L1_PROMPT,
):
    """Sample a target length per row (uniformly from `targets`) into `column` and ask for it in the prompt.

    `template` (default "Think for {n} tokens.", L1-Exact; "Think for maximum {n} tokens." was L1-Max's) is
    appended, after a space, to the last user message of a conversational prompt or to a string prompt; None
    leaves prompts alone. The released L1 data samples N uniformly from 100..4000. Works on a `datasets.Dataset`
    (returns a new one) or a list of dicts (returns new dicts); the input is not modified. Deterministic in `seed`.
    """
    choices = targets if isinstance(targets, range) else list(targets)
    if len(choices) == 0 or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in choices):
        raise ValueError(f"add_length_targets: targets must be positive ints, got {targets!r}")
    if template is not None and "{n}" not in template:
        raise ValueError(f"add_length_targets: template must contain '{{n}}', got {template!r}")
    rng = random.Random(seed)
    sampled = [rng.choice(choices) for _ in range(len(dataset))]

    def update(row: dict, target: int) -> dict:
        row = dict(row)
        row[column] = target
        if template is not None:
            if prompt_column not in row:
                raise ValueError(f"add_length_targets: no prompt column {prompt_column!r} in {sorted(row)}")
            row[prompt_column] = _with_instruction(row[prompt_column], template.format(n=target))
        return row

    if isinstance(dataset, list):
        return [update(row, t) for row, t in zip(dataset, sampled, strict=True)]
    return dataset.map(lambda row, i: update(row, sampled[i]), with_indices=True)
