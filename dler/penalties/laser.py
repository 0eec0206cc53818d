"""Laser, Laser-D and Laser-DE (Liu et al. 2025, "Learn to Reason Efficiently with Adaptive Length-based Reward
Shaping", arXiv 2505.15612): a step bonus for correct answers within a target length.

Rules follow the released code (hkust-nlp/Laser, `verl/utils/reward_score/length_penalty.py`: `compute_length_reward
_larse*`, `_choose_target_length`; `verl/utils/reward_score/hf_math_verifier.py`: `compute_score`;
`verl/trainer/ppo/ray_trainer.py`: `_count_accuracy_bands_metrics`, `_monitor`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.params import param
from dler.penalties.registry import register_penalty

BANDS = ("low", "medium", "high")
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"\\.|[{}]", re.S)  # an escaped character (`\{`, `\}`) is one token and never a brace


def has_boxed_answer(text: str) -> bool:
    """The last `\\boxed{` (or `\\fbox{`) of `text` closes.

    The last box is the answer a grader reads (as dler's `rewards.extract.last_boxed`), so a response cut inside its
    final box has no boxed answer even if an earlier box closed. Escaped braces do not count.
    """
    opened = [box.end() for box in _BOX_OPEN.finditer(text)]
    if not opened:
        return False
    depth = 1
    for token in _BRACE.finditer(text, opened[-1]):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if depth == 0:
                return True
    return False


def well_formatted(text: str, think_end: str, require_boxed: bool) -> bool:
    """`think_end` present (if set) and, after it, a boxed answer that closes (if `require_boxed`)."""
    if think_end:
        if think_end not in text:
            return False
        text = text.split(think_end, 1)[1]
    return not require_boxed or has_boxed_answer(text)


def repetition_ratio(text: str, ngram: int) -> float:
    """Share of repeated word n-grams: `1 - distinct / total` (0 for texts shorter than two n-grams)."""
    words = text.split()
    if len(words) < 2 * ngram:
        return 0.0
    grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def choose_target(
    grid: tuple[int, ...], covered: list[int], total: int, fewest_correct: int, expected_correct: int
) -> int | None:
    """One band's Laser-D target: the smallest grid length L with `floor(covered(L) / total * fewest_correct)`
    at least `expected_correct` (the released `_choose_target_length`, `round_method='floor'`), or None (no limit)
    when none qualifies, as for a band with no rollouts in the window."""
    for length, n in zip(grid, covered, strict=True):
        if total and n * fewest_correct // total >= expected_correct:
            return length
    return None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@register_penalty("laser")
@dataclass(eq=False)
class LaserPenalty(LengthPenalty):
    """Base score +1 correct / -0.5 wrong / -1 badly formatted, plus `alpha` for a correct answer within the target.

    Badly formatted (read from `group.completions`): no `think_end` marker, or no closed boxed answer after it (the
    last `\\boxed{` must close, see `has_boxed_answer`); it scores `format_reward` whatever its correctness, as the
    released `hf_math_verifier.compute_score`. The target is `target_length` or, by default, the group's budget.
    As in the released `compute_length_reward_larse`, only the length decides "within the target" (L <= target): a
    response cut by the generation cap has the cap's length, so it is over any target below the cap.
    """

    formula = (
        "base (+1 correct, -0.5 wrong, -1 no think_end or no closed last box) + alpha if correct and L <= target; "
        "target = budget"
    )
    reference = "Laser, Liu et al. 2025, arXiv 2505.15612"

    alpha: float = param(0.5, ge=0.0, help="the length bonus")
    target_length: int | None = param(None, kind=int, ge=1, help="target L; None = the group's budget")
    correct_reward: float = param(1.0)
    wrong_reward: float = param(-0.5)
    format_reward: float = param(-1.0)
    think_end: str = param("</think>", help="marker that closes the thinking; '' = no check")
    require_boxed: bool = param(True, help="a \\boxed{} answer after think_end is required")

    def _scores(self, group: RolloutGroup) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Base scores, correct-and-formatted mask, formatted mask."""
        size = group.correctness.numel()
        if self.think_end or self.require_boxed:
            if len(group.completions) != size:
                raise ValueError(
                    f"{self.name}: the format check needs the {size} response texts in group.completions, got "
                    f"{len(group.completions)} (or set think_end='' and require_boxed=False)"
                )
            formatted = torch.tensor(
                [well_formatted(t, self.think_end, self.require_boxed) for t in group.completions]
            )
        else:
            formatted = torch.ones(size, dtype=torch.bool)
        correct = (group.correctness > 0) & formatted
        f64 = torch.float64
        base = torch.where(
            correct, torch.tensor(self.correct_reward, dtype=f64), torch.tensor(self.wrong_reward, dtype=f64)
        )
        base = torch.where(formatted, base, torch.tensor(self.format_reward, dtype=f64))
        return base, correct, formatted

    def _target(self, group: RolloutGroup, correct: torch.Tensor) -> int:
        return self.target_length if self.target_length is not None else group.budget

    def _bonus(self, group, target, correct, formatted) -> torch.Tensor:
        return correct & (group.lengths <= target)

    def effective_budget(self, group: RolloutGroup) -> int:
        return self._target(group, group.correctness > 0)

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        base, correct, formatted = self._scores(group)
        target = self._target(group, correct)
        bonus = self._bonus(group, target, correct, formatted)
        return (base + self.alpha * bonus.to(torch.float64)).to(torch.float32)


@register_penalty("laser_d")
@dataclass(eq=False)
class LaserDPenalty(LaserPenalty):
    """Laser with one target per accuracy band, re-chosen every `update_every` steps from recent rollouts.

    Bands by the share of correct, well-formatted rollouts: high >= 2/3, medium [1/3, 2/3), low < 1/3. Released rule
    (`_choose_target_length`, `round_method='floor'`): a band's target is the smallest L in `grid` with
    `floor(coverage(L) * n_band) >= expected_correct`, where coverage(L) is the share of the band's rollouts (all of
    them, right or wrong) no longer than L, and `n_band` the fewest correct rollouts a prompt of the band has:
    floor(2G/3) high, floor(G/3) medium, 1 low (G = group size). When no L qualifies the band has no limit: the
    released code then uses the longest response of the batch being rewarded, which every response is within;
    here that is the longest response of the group.
    For these statistics the monitor bands are the released ones (low <= 1/3 < medium <= 2/3 < high, on raw
    correctness). Adaptation: Laser generates a separate monitor set every 20 steps; here the monitor is the
    training groups seen since the last update (`group.step` tells when `update_every` steps have passed). Until
    the first update every band uses `target_length` (None = the group's budget). `update_every` counts optimizer
    steps: with 8 optimizer steps per generation batch, the paper's 20 steps are 160. Each rank keeps its own
    monitor; the trainer saves rank 0's state.
    """

    formula = (
        "laser with target = per accuracy band (>=2/3, [1/3,2/3), <1/3) the smallest grid L covering enough "
        "rollouts of the band (none: no limit), re-chosen every update_every steps"
    )
    reference = "Laser-D, Liu et al. 2025, arXiv 2505.15612"

    update_every: int = param(20, ge=1, help="optimizer steps between target updates")
    grid: tuple[int, ...] = param(tuple(range(4096, 16384 + 1, 1024)), ge=1, help="candidate targets, increasing")
    expected_correct: int = param(1, ge=1, help="correct rollouts a target must keep (released expected_n_correct)")

    def check(self) -> None:
        super().check()
        if any(b <= a for a, b in zip(self.grid, self.grid[1:], strict=False)):
            raise ValueError(f"{self.name}: grid must increase, got {list(self.grid)}")

    def __post_init__(self):
        super().__post_init__()
        self.targets: dict[str, int | None] | None = None  # a band's None: no limit
        self._reset_window(None)

    def _reset_window(self, start: int | None) -> None:
        self.window_start = start
        self.window_covered = {band: [0] * len(self.grid) for band in BANDS}
        self.window_total = dict.fromkeys(BANDS, 0)
        self.group_size = 0

    def _update(self, step: int) -> None:
        """At a window boundary: choose each band's target from the window, then start a new window at `step`."""
        if self.window_start is None or step < self.window_start:
            self._reset_window(step)
            return
        if step < self.window_start + self.update_every:
            return
        if self.group_size:
            size = self.group_size
            fewest_correct = {"high": size * 2 // 3, "medium": size // 3, "low": 1}
            self.targets = {
                band: choose_target(
                    self.grid,
                    self.window_covered[band],
                    self.window_total[band],
                    fewest_correct[band],
                    self.expected_correct,
                )
                for band in BANDS
            }
        self._reset_window(step)

    def _observe(self, group: RolloutGroup) -> None:
        size = group.correctness.numel()
        hits = int((group.correctness > 0).sum())
        band = "low" if 3 * hits <= size else "medium" if 3 * hits <= 2 * size else "high"
        lengths = group.lengths.reshape(-1, 1)
        covered = (lengths <= torch.tensor(self.grid).reshape(1, -1)).sum(dim=0).tolist()
        self.window_covered[band] = [a + b for a, b in zip(self.window_covered[band], covered, strict=True)]
        self.window_total[band] += size
        self.group_size = size

    def _target(self, group: RolloutGroup, correct: torch.Tensor) -> int:
        if self.targets is None:
            return super()._target(group, correct)
        hits, size = int(correct.sum()), correct.numel()
        band = "high" if 3 * hits >= 2 * size else "medium" if 3 * hits >= size else "low"
        target = self.targets[band]
        return target if target is not None else int(group.lengths.max())  # no limit: every rollout is within

    def effective_budget(self, group: RolloutGroup) -> int:
        if self.targets is None:
            return super().effective_budget(group)
        _, correct, _ = self._scores(group)  # the band of the rewards: correct and well-formatted rollouts
        return self._target(group, correct)

    def __call__(self, group: RolloutGroup) -> torch.Tensor:
        self._update(group.step)
        rewards = super().__call__(group)
        self._observe(group)
        return rewards

    def state_dict(self) -> dict[str, Any]:
        return {
            "targets": dict(self.targets) if self.targets is not None else None,
            "window_start": self.window_start,
            "window_covered": {band: list(v) for band, v in self.window_covered.items()},
            "window_total": dict(self.window_total),
            "group_size": self.group_size,
            "grid": list(self.grid),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        try:
            if list(state["grid"]) != list(self.grid):
                raise ValueError(
                    f"{self.name}: state was saved with grid {state['grid']}, this penalty has {list(self.grid)}"
                )
            targets = state["targets"]
            self.targets = None if targets is None else {band: _optional_int(targets[band]) for band in BANDS}
            self.window_start = None if state["window_start"] is None else int(state["window_start"])
            self.window_covered = {band: [int(n) for n in state["window_covered"][band]] for band in BANDS}
            self.window_total = {band: int(state["window_total"][band]) for band in BANDS}
            self.group_size = int(state["group_size"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"{self.name}: malformed state ({type(error).__name__}: {error}): {state!r}") from None


@register_penalty("laser_de")
@dataclass(eq=False)
class LaserDEPenalty(LaserDPenalty):
    """Laser-D, plus `alpha` for exploring: a wrong, well-formatted, over-target response that is not repetitive.

    Repetitive (dler's simple rule; the released code uses a token n-gram detector): at least
    `repetition_threshold` of the response's word `repetition_ngram`-grams are repeats. Over the target means
    L > target, as in the released `compute_length_reward_larse_de`; a band without a limit has no rollout over it.
    """

    formula = "laser_d, and +alpha for a wrong, well-formatted response over its target that is not repetitive"
    reference = "Laser-DE, Liu et al. 2025, arXiv 2505.15612"

    repetition_ngram: int = param(8, ge=1, help="word n-gram size of the repetition check")
    repetition_threshold: float = param(0.3, gt=0.0, le=1.0, help="repeated n-gram share that counts as repetitive")

    def _bonus(self, group, target, correct, formatted) -> torch.Tensor:
        bonus = super()._bonus(group, target, correct, formatted)
        over = group.lengths > target
        explore = formatted & ~correct & over
        if explore.any():
            if len(group.completions) != group.correctness.numel():
                raise ValueError(f"{self.name}: the repetition check needs the response texts in group.completions")
            fresh = torch.tensor(
                [
                    repetition_ratio(text, self.repetition_ngram) < self.repetition_threshold
                    for text in group.completions
                ]
            )
            bonus = bonus | (explore & fresh)
        return bonus
