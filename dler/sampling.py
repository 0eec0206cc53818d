"""Dynamic sampling (DAPO / DLER): keep only prompts whose group carries a learning signal.

Pure functions, identical on every rank: the trainer feeds them globally gathered values, so every rank takes the
same decisions and makes the same collective calls without extra communication.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SIGNAL_TOL = 1e-6  # a group whose values spread less than this carries no signal


@dataclass
class GroupSignal:
    """Per-group verdicts. `keep`: the values differ. `all_zero`: all equal and <= 0. `all_positive`: all equal, > 0."""

    keep: torch.Tensor
    all_zero: torch.Tensor
    all_positive: torch.Tensor


def classify_groups(values: torch.Tensor, group_size: int) -> GroupSignal:
    """Classify consecutive groups of `group_size` values (shaped rewards or raw correctness)."""
    grouped = torch.as_tensor(values, dtype=torch.float32).view(-1, group_size)
    spread = grouped.max(dim=1).values - grouped.min(dim=1).values
    keep = spread > SIGNAL_TOL
    flat_positive = grouped.min(dim=1).values > 0
    return GroupSignal(keep=keep, all_zero=~keep & ~flat_positive, all_positive=~keep & flat_positive)


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
