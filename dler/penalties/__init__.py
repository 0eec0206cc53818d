"""Length penalties: how a group of rollouts' correctness and lengths become shaped rewards.

A penalty sees one prompt's group at a time (`RolloutGroup`) and returns one shaped reward per rollout. The
optimisation recipe (advantages, clipping, dynamic sampling) is a separate choice made in `DLERConfig`.
"""

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.truncation import TruncationPenalty

__all__ = ["LengthPenalty", "RolloutGroup", "TruncationPenalty"]
