"""Dynamic sampling (DAPO / DLER): keep only prompts whose group carries a learning signal.

Pure functions, identical on every rank: the trainer feeds them globally gathered values, so every rank takes the
same decisions and makes the same collective calls without extra communication.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Any

import torch

from dler.round_sizing import update_kept_fraction

SIGNAL_TOL = 1e-6  # a group whose values spread less than this carries no signal


@dataclass
class GroupSignal:
    """Per-group verdicts. `keep`: the values of the group's scorable rollouts differ. `all_zero`: all equal and
    <= 0. `all_positive`: all equal, > 0. `unscorable`: every value NaN (every reward None): no signal either."""

    keep: torch.Tensor
    all_zero: torch.Tensor
    all_positive: torch.Tensor
    unscorable: torch.Tensor


def classify_groups(values: torch.Tensor, group_size: int) -> GroupSignal:
    """Classify consecutive groups of `group_size` values (rewards or raw correctness); NaN values (unscorable
    rollouts) are left out of the spread, as TRL leaves them out of the baseline."""
    grouped = torch.as_tensor(values, dtype=torch.float32).view(-1, group_size)
    missing = torch.isnan(grouped)
    high = torch.where(missing, -torch.inf, grouped).max(dim=1).values
    low = torch.where(missing, torch.inf, grouped).min(dim=1).values
    unscorable = missing.all(dim=1)
    keep = ~unscorable & (high - low > SIGNAL_TOL)
    flat = ~keep & ~unscorable
    return GroupSignal(keep=keep, all_zero=flat & (low <= 0), all_positive=flat & (low > 0), unscorable=unscorable)


def assign_groups(owners: list[int], num_processes: int, quota: int) -> list[int]:
    """Destination rank of each selected group, so that every rank ends with exactly `quota` groups.

    A group stays on the rank that generated it while that rank has room; the surplus moves to ranks short of
    their quota, lowest rank first. `owners` lists the generating rank of each selected group, in selection order.
    """
    if len(owners) != num_processes * quota:
        raise ValueError(f"{len(owners)} groups cannot fill {num_processes} ranks x {quota} groups")
    filled = [0] * num_processes
    destinations: list[int | None] = [None] * len(owners)
    for i, owner in enumerate(owners):
        if filled[owner] < quota:
            destinations[i] = owner
            filled[owner] += 1
    for i, destination in enumerate(destinations):
        if destination is None:
            rank = next(r for r in range(num_processes) if filled[r] < quota)
            destinations[i] = rank
            filled[rank] += 1
    return destinations  # type: ignore[return-value]


def partial_quota(num_kept: int, num_processes: int, group_size: int, steps_per_generation: int) -> int:
    """Groups per rank for a partial batch: the most that every rank can hold while its samples still split into
    `steps_per_generation` equal micro-batches. 0 when not even that is possible."""
    for quota in range(num_kept // num_processes, 0, -1):
        if (quota * group_size) % steps_per_generation == 0:
            return quota
    return 0


class PromptStream:
    """An endless, seeded, resumable stream of dataset indices for the extra sampling rounds.

    Each epoch is a fresh permutation drawn from `seed + epoch`. Its whole state is two integers, saved in the
    trainer's checkpoints, so a resumed run draws the very prompts the uninterrupted run would have drawn.
    """

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True):
        if num_rows <= 0:
            raise ValueError("the training dataset is empty")
        self.num_rows, self.seed, self.shuffle = num_rows, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_rows))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_rows, generator=generator).tolist()

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if self.position == self.num_rows:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            step = min(n - len(out), self.num_rows - self.position)
            out.extend(self._order[self.position : self.position + step])
            self.position += step
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()


@dataclass
class Carried:
    """A surplus group waiting in the carry buffer: an opaque payload and the generation batch that produced it."""

    item: Any
    born: int


class CarryBuffer:
    """Surplus groups with signal kept for the next batches, oldest first, dropped once older than `max_age`
    generation batches so the data stays nearly on-policy."""

    def __init__(self, max_age: int):
        self.max_age = max_age
        self.items: list[Carried] = []

    def __len__(self) -> int:
        return len(self.items)

    def put(self, item: Any, born: int) -> None:
        """Add a group, after every group born no later (oldest first, arrival order within a batch)."""
        bisect.insort_right(self.items, Carried(item, born), key=lambda c: c.born)

    def evict(self, now: int) -> list[Carried]:
        """Remove and return the groups too old to train at generation batch `now`."""
        old = [c for c in self.items if now - c.born > self.max_age]
        self.items = [c for c in self.items if now - c.born <= self.max_age]
        return old

    def take(self, n: int) -> list[Carried]:
        """Remove and return the `n` oldest groups (fewer if the buffer holds fewer)."""
        out, self.items = self.items[:n], self.items[n:]
        return out


def _uniform(seed: int, key: int, draw: int) -> float:
    """A uniform number in [0, 1) fixed by its arguments: the same on every rank and after a resume."""
    return random.Random(f"{seed}:{key}:{draw}").random()


class SkipHistory:
    """Per-prompt count of consecutive groups without signal; prompts past `skip_after` are skipped, except that
    each time one comes up it is still generated with probability `exploration` (the floor, so none is excluded
    forever). A group with signal resets its prompt. Decisions are seeded per (prompt, draw): deterministic."""

    def __init__(self, skip_after: int, exploration: float, seed: int):
        if skip_after < 1 or not 0.0 < exploration <= 1.0:
            raise ValueError(f"need skip_after >= 1 and 0 < exploration <= 1, got {skip_after}, {exploration}")
        self.skip_after, self.exploration, self.seed = skip_after, exploration, seed
        self.no_signal: dict[int, int] = {}
        self.draws: dict[int, int] = {}  # decisions taken on a skippable prompt: the seed of the next one

    def record(self, key: int, signal: bool) -> None:
        if signal:
            self.no_signal.pop(key, None)
            self.draws.pop(key, None)
        else:
            self.no_signal[key] = self.no_signal.get(key, 0) + 1

    def skippable(self, key: int) -> bool:
        return self.no_signal.get(key, 0) >= self.skip_after

    def num_skippable(self) -> int:
        return sum(count >= self.skip_after for count in self.no_signal.values())

    def draw(self, key: int) -> bool:
        """Whether to generate `key` now: always when it is not skippable, else with probability `exploration`."""
        if not self.skippable(key):
            return True
        n = self.draws.get(key, 0)
        self.draws[key] = n + 1
        return _uniform(self.seed, key, n) < self.exploration

    def state_dict(self) -> dict:
        return {
            "no_signal": {str(k): v for k, v in self.no_signal.items()},
            "draws": {str(k): v for k, v in self.draws.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.no_signal = {int(k): int(v) for k, v in state.get("no_signal", {}).items()}
        self.draws = {int(k): int(v) for k, v in state.get("draws", {}).items()}


def draw_prompts(stream: PromptStream, history: SkipHistory | None, n: int) -> tuple[list[int], int]:
    """The next `n` dataset indices from `stream` that `history` lets through, and how many it skipped."""
    chosen: list[int] = []
    skipped = 0
    while len(chosen) < n:
        for index in stream.take(n - len(chosen)):
            if history is None or history.draw(index):
                chosen.append(index)
            else:
                skipped += 1
    return chosen, skipped


# ------------------------------------------------------------------ what dynamic sampling remembers
@dataclass
class RoundScores:
    """Scores of rollouts, laid out as consecutive groups: the same on every rank (gathered, rank-major). NaN marks
    what is unscorable: `correctness` where every correctness function returned None, `shaped` there too, `total`
    where every reward function did."""

    shaped: torch.Tensor
    correctness: torch.Tensor
    lengths: torch.Tensor
    over_budget: torch.Tensor
    budgets: torch.Tensor  # one per rollout (its group's budget)
    rewards: torch.Tensor  # (rollouts, reward functions): what each reward function returned (NaN: None)
    # the reward the advantages use: `shaped` (the penalty's output on correctness) plus the other reward functions
    # (dler.reward_roles.combine_rewards); NaN where every function returned None. Unset: `shaped`.
    total: torch.Tensor | None = None

    def __post_init__(self):
        if self.total is None:
            self.total = self.shaped

    def group(self, group: int, group_size: int) -> RoundScores:
        rows = slice(group * group_size, (group + 1) * group_size)
        return RoundScores(**{name: value[rows] for name, value in self.as_dict().items()})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @staticmethod
    def cat(parts: list[RoundScores]) -> RoundScores:
        return RoundScores(
            **{name: torch.cat([getattr(p, name) for p in parts]) for name in RoundScores.__dataclass_fields__}
        )


@dataclass
class GroupRef:
    """A group with signal: the generation batch, round and global group index that produced it, the rank that
    generated it, and its scores. The same on every rank; only the owner holds its `rows` (the rollouts as
    generated: inputs, token ids, completions, and behaviour log-probs once computed)."""

    born: int
    round: int
    group: int
    owner: int
    scores: RoundScores
    rows: dict | None = None

    @property
    def key(self) -> tuple[int, int, int]:
        return self.born, self.round, self.group

    def to_dict(self) -> dict:
        return {
            "born": self.born,
            "round": self.round,
            "group": self.group,
            "owner": self.owner,
            "scores": self.scores.as_dict(),
            "rows": self.rows,
        }

    @staticmethod
    def from_dict(state: dict) -> GroupRef:
        return GroupRef(**{**state, "scores": RoundScores(**state["scores"])})


class SamplingState:
    """Everything dynamic sampling carries from one generation batch to the next: the prompt stream, the carry
    buffer, the skip history, the kept fraction and the run's counters.

    Decisions read only globally gathered values, so this state is the same on every rank, except the rows of
    carried groups, which live on the rank that generated them. `state_dict` holds all of it (JSON-able but the
    carried groups, which `carry_state_dict` gives per rank)."""

    def __init__(
        self,
        seed: int,
        shuffle: bool = True,
        max_carry_age: int = 0,
        skip_after: int | None = None,
        skip_exploration: float = 0.05,
    ):
        self.seed, self.shuffle = seed, shuffle
        self.stream: PromptStream | None = None  # built on the first draw, when the dataset's size is final
        self._stream_state: dict | None = None  # restored from a checkpoint before the first draw
        self.carry = CarryBuffer(max_carry_age)
        self.skip = SkipHistory(skip_after, skip_exploration, seed) if skip_after else None
        self.kept_fraction: float | None = None  # moving average, sizes rounds (adaptive_rounds)
        self.generations = 0  # generation batches so far: the clock of carried groups' ages
        self.prompts_generated = 0  # over the run: prompts generated / prompts trained on
        self.prompts_trained = 0

    def draw(self, n: int, num_rows: int) -> tuple[list[int], int]:
        """The next `n` indices of a dataset of `num_rows` (skippable prompts passed over, except at the
        exploration floor), and how many were skipped."""
        if self.stream is None:
            self.stream = PromptStream(num_rows, self.seed, self.shuffle)
            if self._stream_state:
                self.stream.load_state_dict(self._stream_state)
        return draw_prompts(self.stream, self.skip, n)

    def record(self, indices: list[int], signal: list[bool]) -> None:
        """Which prompts of a round had signal, for the skip history (a no-op when skipping is off)."""
        if self.skip is not None:
            for index, has_signal in zip(indices, signal, strict=True):
                self.skip.record(index, has_signal)

    def take_carried(self, n: int) -> tuple[list[GroupRef], list[GroupRef]]:
        """At the start of a generation batch: the groups too old to train (dropped), then up to `n` carried
        groups, oldest first."""
        evicted = [c.item for c in self.carry.evict(self.generations)]
        return evicted, [c.item for c in self.carry.take(n)]

    def end_batch(self, surplus: list[GroupRef], fresh_kept: int, generated: int, trained: int, decay: float | None):
        """After a generation batch: carry its surplus groups, count, and fold the batch's kept fraction in
        (`decay` None: adaptive rounds off, no average kept)."""
        for ref in surplus if self.carry.max_age else []:
            self.carry.put(ref, ref.born)
        self.prompts_generated += generated
        self.prompts_trained += trained
        if decay is not None:
            self.kept_fraction = update_kept_fraction(self.kept_fraction, fresh_kept, generated, decay)

    def state_dict(self) -> dict:
        return {
            "prompt_stream": self.stream.state_dict() if self.stream else self._stream_state,
            "skip_history": self.skip.state_dict() if self.skip else None,
            "kept_fraction": self.kept_fraction,
            "generations": self.generations,
            "prompts_generated": self.prompts_generated,
            "prompts_trained": self.prompts_trained,
        }

    def load_state_dict(self, state: dict) -> None:
        self._stream_state = state.get("prompt_stream")
        self.stream = None  # rebuilt from the restored state on the next draw
        if self.skip is not None:
            self.skip.load_state_dict(state.get("skip_history") or {})
        self.kept_fraction = state.get("kept_fraction")
        self.generations = state.get("generations", 0)
        self.prompts_generated = state.get("prompts_generated", 0)
        self.prompts_trained = state.get("prompts_trained", 0)

    def carry_state_dict(self) -> list[dict]:
        """The carried groups as this rank holds them (bookkeeping, and rows where this rank generated them)."""
        return [c.item.to_dict() for c in self.carry.items]

    def load_carry_state_dict(self, groups: list[dict]) -> None:
        self.carry = CarryBuffer(self.carry.max_age)
        for group in groups:
            ref = GroupRef.from_dict(group)
            self.carry.put(ref, ref.born)
