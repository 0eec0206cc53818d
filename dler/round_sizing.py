"""Round sizing for dynamic sampling: how many prompts a round generates so that enough groups keep a signal.

Sized from a moving average of the fraction of groups kept, with a binomial safety margin; pure arithmetic, the same
on every rank.
"""

from __future__ import annotations

import math


def update_kept_fraction(ema: float | None, kept: int, generated: int, decay: float) -> float | None:
    """Exponential moving average of the fraction of generated groups that had signal (None until observed)."""
    if generated <= 0:
        return ema
    observed = kept / generated
    return observed if ema is None else decay * ema + (1.0 - decay) * observed


def prompts_for(need: int, kept_fraction: float, confidence: float) -> float:
    """Prompts to generate so that, each keeping a group with probability `kept_fraction`, at least `need` groups
    are kept with a margin of `confidence` binomial standard deviations: the least n with
    n*f - z*sqrt(n*f*(1-f)) >= need. Infinite when nothing is kept."""
    if need <= 0:
        return 0.0
    f = min(max(kept_fraction, 0.0), 1.0)
    if f == 0.0:
        return math.inf
    b = confidence * math.sqrt(f * (1.0 - f))
    root = (b + math.sqrt(b * b + 4.0 * f * need)) / (2.0 * f)  # sqrt(n) solving f*n - b*sqrt(n) - need = 0
    return root * root


def round_prompts(
    need: int, base: int, num_processes: int, kept_fraction: float | None, max_factor: float, confidence: float
) -> int:
    """Prompts per rank for a generation round: enough for `need` more kept groups over all ranks at the kept
    fraction `kept_fraction` (with `confidence` standard deviations of margin, see `prompts_for`), never fewer than
    the sampler's `base` (the paper's round) nor more than `base * max_factor`. `base` when nothing is observed yet.

    Sizes a step's first round from the moving average, and its later rounds through `later_round_prompts`."""
    if kept_fraction is None:
        return base
    wanted = prompts_for(need, kept_fraction, confidence) / num_processes
    cap = max(base, math.floor(base * max_factor))
    if wanted <= base:
        return base
    return cap if wanted >= cap else math.ceil(wanted - 1e-9)


def later_round_prompts(
    need: int,
    base: int,
    num_processes: int,
    kept_fraction: float | None,
    kept: int,
    generated: int,
    decay: float,
    max_factor: float,
    confidence: float,
) -> int:
    """Prompts per rank for a later round of a step that still misses `need` groups after generating `generated`
    groups and keeping `kept` of them: `round_prompts` at the kept fraction the moving average
    `kept_fraction` would have if the step ended now (this step's rounds folded in with `decay`; taken as is when
    there is no average yet, as in the run's first step). Never below `base`, the paper's round; the cap while
    the estimate is 0 (the run's first step has kept nothing yet).

    A later round runs only because the earlier ones came up short, so this step's own fraction is biased low;
    folding it into the average keeps the estimate from swinging on one unlucky round."""
    estimate = update_kept_fraction(kept_fraction, kept, generated, decay)
    return round_prompts(need, base, num_processes, estimate, max_factor, confidence)
