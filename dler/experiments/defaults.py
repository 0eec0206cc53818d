"""Per-penalty settings of a grid cell: defaults derived from the recipe's lengths, with a YAML file over them.

Every length a penalty defines itself by is derived from the recipe's budget `L` (`truncation_length`, which is the
generation cap `max_completion_length` unless set; both are 4000 in the DLER paper's R1 recipes, whose Fig. 8 labels
each penalty with that number: Truncation-4000, Cosine-4000, L1-Max-4000, Laser-4000), so each penalty acts on the same
length as DLER's truncation. The rules and their sources (docs/experiments.md has the same table):

- soft_overlong: `max_length = L`, `buffer = L // 5` (at least 1): DAPO's 4096-token buffer of its 20480-token cap
  (expected length 16384 + 4096 punishment buffer, arXiv 2503.14476 Sec. 4.1);
- cosine: `max_length = L`, `exceed_margin = min(16, L // 16)`: the released margin (16 tokens) for any L >= 256, a
  sixteenth of L below, so that the margin never covers the whole range;
- laser_d, laser_de: `grid` = L * k / 16 for k = 4..16 (floored, distinct): the released grid 4096..16384 step 1024
  scaled from its top 16384 to L, so the targets lie below the budget and bind;
- thinkprune: `budgets` = (L, 3L/4, L/2), the released 4000 -> 3000 -> 2000 relative to L; `stage_steps` at a third
  and two thirds of max_steps;
- l1_exact, l1_max: no parameter; the data gets a per-row target column (`l1_targets`): uniform in
  [max(1, L // 40), L], the released 100..4000 relative to L, seeded by the recipe's `seed`;
- truncation, kimi, laser, efficient, shorterbetter: none (they read the group's budget, or no length at all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LENGTH_TARGET_PENALTIES = ("l1_exact", "l1_max")
DAPO_BUFFER_FRACTION = (4096, 20480)  # DAPO: buffer B of the generation cap Lmax
COSINE_MARGIN = 16  # demystify-long-cot MAX_LEN_MARGIN
LASER_GRID_SIXTEENTHS = range(4, 17)  # 4096..16384 step 1024 = 16384 * k / 16
L1_TARGET_RANGE = (100, 4000)  # released L1 data: targets uniform in 100..4000


def laser_grid(budget: int) -> list[int]:
    """Laser-D's candidate targets scaled to `budget`: budget * k / 16 for k = 4..16, floored, distinct, >= 1."""
    return sorted({max(1, budget * k // 16) for k in LASER_GRID_SIXTEENTHS})


def thinkprune_schedule(budget: int, max_steps: int) -> dict[str, list[int]]:
    """ThinkPrune's stages relative to `budget`, switching at a third and two thirds of `max_steps`."""
    first = max(1, max_steps // 3)
    return {"budgets": [budget, max(1, budget * 3 // 4), max(1, budget // 2)],
            "stage_steps": [first, max(first + 1, 2 * max_steps // 3)]}  # fmt: skip


def l1_targets(budget: int) -> range:
    """The target lengths L1's data samples from: the released 100..4000 relative to a 4000-token budget."""
    low = max(1, budget * L1_TARGET_RANGE[0] // L1_TARGET_RANGE[1])
    return range(low, budget + 1)


def default_penalty_kwargs(penalty: str, budget: int, max_steps: int) -> dict[str, Any]:
    """The kwargs a grid cell of `penalty` gets when the penalty config names none (module docstring: the rules)."""
    if penalty == "soft_overlong":
        return {"max_length": budget, "buffer": max(1, budget * DAPO_BUFFER_FRACTION[0] // DAPO_BUFFER_FRACTION[1])}
    if penalty == "cosine":
        return {"max_length": budget, "exceed_margin": min(COSINE_MARGIN, budget // 16)}
    if penalty in ("laser_d", "laser_de"):
        return {"grid": laser_grid(budget)}
    if penalty == "thinkprune":
        return thinkprune_schedule(budget, max_steps)
    return {}


def read_penalty_config(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """`--penalty_config FILE`: a YAML mapping penalty name -> kwargs (each merged over that penalty's defaults)."""
    if path is None:
        return {}
    import yaml

    where = f"--penalty_config {path}"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"{where}: cannot read it ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{where} is not valid YAML: {error}".replace("\n", " ")) from None
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"{where} must map penalty names to kwargs, e.g. 'cosine: {{exceed_margin: 0}}'")
    for name, kwargs in data.items():
        if not isinstance(kwargs, dict):
            raise ValueError(f"{where}: {name!r} must map to a mapping of kwargs, e.g. '{name}: {{alpha: 0.1}}', "
                             f"got {kwargs!r}")  # fmt: skip
    return {str(name): dict(kwargs) for name, kwargs in data.items()}


def cell_penalty_kwargs(penalty: str, budget: int, max_steps: int, config: dict[str, dict]) -> dict[str, Any]:
    """A fresh dict per cell (never shared between cells): the derived defaults, then the config's kwargs over them."""
    return {**default_penalty_kwargs(penalty, budget, max_steps), **dict(config.get(penalty) or {})}
