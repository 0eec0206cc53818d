"""Graded records as arrays, the k the curves are read at, and the standard error of a mean: the pieces that
`metrics`, `majority` and `lengths` all build on.

A *graded record* is one problem with its n samples:

    {"benchmark": "aime24", "index": 3,
     "correct": [1.0, 0.0, ...],            # one score per sample (the project's math reward)
     "extracted": ["204", None, ...],       # the answer the grader read in each sample (None: no answer)
     "tokens": [5120, 32768, ...],          # response length in tokens, EOS included
     "truncated": [false, true, ...]}       # hit the generation cap without EOS

A sample is *correct* when its score is >= 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """An int or numpy integer, but not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def correct_matrix(records: Sequence[dict[str, Any]]) -> np.ndarray:
    """Problems x samples booleans (score >= 0.5); every problem must have the same number of samples."""
    if not records:
        raise ValueError("no graded records")
    sizes = {len(r["correct"]) for r in records}
    if len(sizes) != 1:
        raise ValueError(f"every problem must have the same number of samples, got {sorted(sizes)}")
    if sizes == {0}:
        raise ValueError("records have no samples")
    return np.array([[float(x) >= 0.5 for x in r["correct"]] for r in records], dtype=bool)


def token_arrays(records: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """Each record's response lengths as an int64 array."""
    return [np.asarray([int(t) for t in r["tokens"]], dtype=np.int64) for r in records]


def powers_of_two(n: int) -> list[int]:
    """1, 2, 4, ... up to n (the k of the pass@k and maj@k curves)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [2**i for i in range(int(math.log2(n)) + 1)]


def default_ks(n: int) -> list[int]:
    """The default k of pass@k and maj@k in `summarize`: powers of two up to n, and n itself."""
    return sorted(set(powers_of_two(n)) | {int(n)})


def check_ks(ks: Iterable[int], n: int, what: str) -> list[int]:
    """`ks` as ints, each in [1, n]; `what` names the caller in the error."""
    out = []
    for k in ks:
        if not is_integer(k):
            raise TypeError(f"{what}: k must be an integer, got {k!r}")
        if not 1 <= k <= n:
            raise ValueError(f"{what}: k must be in [1, n] = [1, {n}], got k={k}")
        out.append(int(k))
    if not out:
        raise ValueError(f"{what}: no k given")
    return out


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of `values` as a sample: std(values, ddof=1) / sqrt(len); 0.0 for one value.

    Over per-problem mean correctness this is `pass@1_se` (problems drawn from a population, sampling noise
    included)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("standard_error: need a non-empty sequence of numbers")
    if x.size == 1:
        return 0.0
    return float(np.std(x, ddof=1) / math.sqrt(x.size))


def combined_se(ses: Sequence[float | None]) -> float | None:
    """sqrt(sum se^2) / B: the error of a mean of B independent estimates; None when one has no error (or none
    is given)."""
    if not ses or any(s is None for s in ses):
        return None
    return math.sqrt(sum(s * s for s in ses)) / len(ses)
