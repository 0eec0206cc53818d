"""Length penalties: how a group of rollouts' correctness and lengths become shaped rewards.

A penalty sees one prompt's group at a time (`RolloutGroup`) and returns one shaped reward per rollout. The
optimisation recipe (advantages, clipping, dynamic sampling) is a separate choice made in `DLERConfig`.
Penalties are picked by name (`get_penalty("cosine", max_length=4000)`); see docs/penalties.md.
"""

from dler.penalties.base import LengthPenalty, RolloutGroup
from dler.penalties.cosine import CosinePenalty
from dler.penalties.dapo import SoftOverlongPenalty
from dler.penalties.efficient import EfficientPenalty
from dler.penalties.kimi import KimiPenalty
from dler.penalties.l1 import L1ExactPenalty, L1MaxPenalty, add_length_targets
from dler.penalties.laser import LaserDEPenalty, LaserDPenalty, LaserPenalty
from dler.penalties.params import param
from dler.penalties.registry import (
    ENTRY_POINT_GROUP,
    available_penalties,
    describe_penalties,
    get_penalty,
    penalties_table,
    penalty_class,
    penalty_params,
    register_penalty,
)
from dler.penalties.shorterbetter import ShorterBetterPenalty
from dler.penalties.thinkprune import ThinkPrunePenalty
from dler.penalties.truncation import TruncationPenalty

BUILTIN_PENALTIES = (
    "cosine",
    "efficient",
    "kimi",
    "l1_exact",
    "l1_max",
    "laser",
    "laser_d",
    "laser_de",
    "shorterbetter",
    "soft_overlong",
    "thinkprune",
    "truncation",
)

__all__ = [
    "BUILTIN_PENALTIES",
    "ENTRY_POINT_GROUP",
    "CosinePenalty",
    "EfficientPenalty",
    "KimiPenalty",
    "L1ExactPenalty",
    "L1MaxPenalty",
    "LaserDEPenalty",
    "LaserDPenalty",
    "LaserPenalty",
    "LengthPenalty",
    "RolloutGroup",
    "ShorterBetterPenalty",
    "SoftOverlongPenalty",
    "ThinkPrunePenalty",
    "TruncationPenalty",
    "add_length_targets",
    "available_penalties",
    "describe_penalties",
    "get_penalty",
    "param",
    "penalties_table",
    "penalty_class",
    "penalty_params",
    "register_penalty",
]
