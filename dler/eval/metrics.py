"""Evaluation metrics: pass@k, majority vote, lengths by correctness, accuracy per token spent.

Everything here is pure Python (and numpy) on graded records, so it is unit-tested on hand-made numbers and
recomputed by `dler report` without a model. A *graded record* is one problem with its n samples:

    {"benchmark": "aime24", "index": 3,
     "correct": [1.0, 0.0, ...],            # one score per sample (the project's math reward)
     "extracted": ["204", None, ...],       # the answer the grader read in each sample (None: no answer)
     "tokens": [5120, 32768, ...],          # response length in tokens, EOS included
     "truncated": [false, true, ...]}       # hit the generation cap without EOS

Definitions (also in docs/evaluation.md):

- pass@1: mean correctness over problems x samples.
- pass@k: the unbiased estimator of Chen et al. (2021), `1 - C(n-c, k) / C(n, k)` per problem, averaged over
  problems; computed as `1 - prod(1 - k / arange(n-c+1, n+1))`, which never forms the huge binomials.
- maj@k: per problem, the most frequent extracted answer among the *first* k samples (answers compared as
  normalised strings; samples without an answer do not vote; ties go to the answer seen first); 1 if that
  answer was graded correct. A problem with no answer among its k samples scores 0.
- lengths: mean tokens per sample over all samples, over correct samples and over incorrect samples.
- truncation rate: fraction of samples cut off by the generation cap.
- accuracy per 1,000 tokens: pass@1 / (mean length / 1000).
- parallel thinking: for each k, maj@k against the tokens spent on k samples per problem (k x mean length), and
  against the latency of running them in parallel (mean over problems of the longest of the k samples).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct answers among `n` samples (Chen et al. 2021).

    `1 - C(n-c, k) / C(n, k)`: the probability that at least one of k samples drawn without replacement from the
    n is correct. Computed as `1 - prod(1 - k / arange(n-c+1, n+1))`; exactly 1.0 when `n - c < k`.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"pass_at_k: {name} must be an integer, got {value!r}")
    n, c, k = int(n), int(c), int(k)
    if n < 1:
        raise ValueError(f"pass_at_k: n (samples per problem) must be >= 1, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c (correct samples) must be in [0, n] = [0, {n}], got c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n] = [1, {n}] (cannot draw more samples than exist), got k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def powers_of_two(n: int) -> list[int]:
    """1, 2, 4, ... up to n (the k of the pass@k and maj@k curves)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [2**i for i in range(int(math.log2(n)) + 1)]


def mean_pass_at_k(correct: Sequence[Sequence[float]], k: int) -> float:
    """pass@k averaged over problems; `correct[i]` holds problem i's per-sample scores (>= 0.5 counts correct)."""
    if not correct:
        raise ValueError("no problems")
    return float(np.mean([pass_at_k(len(row), sum(1 for x in row if x >= 0.5), k) for row in correct]))


_SPACES = re.compile(r"\s+")
_SIZING = re.compile(r"\\(left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")


def normalize_vote(answer: str | None) -> str | None:
    """The key answers vote under: whitespace, `\\left`/`\\right` sizing, `\\dfrac`/`\\tfrac` and `\\!`/`\\,`
    spacing removed. Equivalent answers written differently (`0.5` and `\\frac{1}{2}`) still vote apart."""
    if answer is None:
        return None
    s = _SIZING.sub("", answer)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for spacing in ("\\!", "\\,", "\\;", "\\:", "\\ "):
        s = s.replace(spacing, "")
    s = _SPACES.sub("", s)
    return s or None


def majority_vote(extracted: Sequence[str | None], correct: Sequence[float], k: int) -> float:
    """maj@k of one problem: is the most frequent answer among the first k samples correct? (1.0 or 0.0)

    Samples without an extracted answer do not vote; ties between answers go to the one that appeared first.
    """
    if len(extracted) != len(correct):
        raise ValueError(f"{len(extracted)} extracted answers but {len(correct)} scores")
    if not 1 <= k <= len(extracted):
        raise ValueError(f"maj@k: k must be in [1, {len(extracted)}], got k={k}")
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    score: dict[str, float] = {}
    for i in range(k):
        key = normalize_vote(extracted[i])
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
        score[key] = max(score.get(key, 0.0), float(correct[i] >= 0.5))
    if not counts:
        return 0.0
    winner = min(counts, key=lambda a: (-counts[a], first[a]))
    return score[winner]


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def summarize(records: Sequence[dict[str, Any]], ks: Sequence[int] | None = None) -> dict[str, Any]:
    """Metrics of one benchmark from its graded records (one per problem, all with the same number of samples)."""
    if not records:
        raise ValueError("no graded records to summarise")
    sizes = {len(r["correct"]) for r in records}
    if len(sizes) != 1:
        raise ValueError(f"every problem must have the same number of samples, got {sorted(sizes)}")
    (n,) = sizes
    if n == 0:
        raise ValueError("records have no samples")
    ks = list(ks) if ks is not None else powers_of_two(n)
    correct = [[float(x) for x in r["correct"]] for r in records]
    tokens = [[int(t) for t in r["tokens"]] for r in records]
    truncated = [[bool(t) for t in r["truncated"]] for r in records]
    flat_correct = [x >= 0.5 for row in correct for x in row]
    flat_tokens = [t for row in tokens for t in row]
    pass1 = float(np.mean(flat_correct))
    mean_len = float(np.mean(flat_tokens))
    pass_k = {str(k): mean_pass_at_k(correct, k) for k in ks}
    maj_k = {
        str(k): float(np.mean([majority_vote(r["extracted"], c, k) for r, c in zip(records, correct, strict=True)]))
        for k in ks
    }
    parallel = []
    for k in ks:
        parallel.append(
            {
                "k": k,
                "maj@k": maj_k[str(k)],
                "pass@k": pass_k[str(k)],
                "total_tokens": k * mean_len,
                "latency_tokens": float(np.mean([max(row[:k]) for row in tokens])),
            }
        )
    return {
        "num_problems": len(records),
        "n": n,
        "pass@1": pass1,
        "pass@k": pass_k,
        "maj@k": maj_k,
        "mean_length": mean_len,
        "median_length": float(np.median(flat_tokens)),
        "mean_length_correct": _mean(t for t, ok in zip(flat_tokens, flat_correct, strict=True) if ok),
        "mean_length_incorrect": _mean(t for t, ok in zip(flat_tokens, flat_correct, strict=True) if not ok),
        "truncation_rate": float(np.mean([t for row in truncated for t in row])),
        "accuracy_per_1k_tokens": pass1 / (mean_len / 1000) if mean_len > 0 else None,
        "parallel_thinking": parallel,
        # problems the model solved in some / every sample: the "occasionally solvable" set of 2504.05185
        "solved_any": float(np.mean([any(x >= 0.5 for x in row) for row in correct])),
        "solved_all": float(np.mean([all(x >= 0.5 for x in row) for row in correct])),
    }


def overall(per_benchmark: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Macro averages over benchmarks (each benchmark weighs the same, as in the paper's averages), plus the
    micro pass@1 over every sample of every benchmark."""
    if not per_benchmark:
        raise ValueError("no benchmarks")
    items = list(per_benchmark.values())

    def macro(key):
        values = [m[key] for m in items if m.get(key) is not None]
        return float(np.mean(values)) if values else None

    common_ks = set.intersection(*(set(m["pass@k"]) for m in items))
    ks = sorted(common_ks, key=int)
    samples = sum(m["num_problems"] * m["n"] for m in items)
    out = {
        "benchmarks": list(per_benchmark),
        "num_problems": sum(m["num_problems"] for m in items),
        "pass@1": macro("pass@1"),
        "pass@1_micro": sum(m["pass@1"] * m["num_problems"] * m["n"] for m in items) / samples,
        "pass@k": {k: float(np.mean([m["pass@k"][k] for m in items])) for k in ks},
        "maj@k": {k: float(np.mean([m["maj@k"][k] for m in items])) for k in ks},
        "mean_length": macro("mean_length"),
        "mean_length_correct": macro("mean_length_correct"),
        "mean_length_incorrect": macro("mean_length_incorrect"),
        "truncation_rate": macro("truncation_rate"),
    }
    out["accuracy_per_1k_tokens"] = out["pass@1"] / (out["mean_length"] / 1000) if out["mean_length"] else None
    out["parallel_thinking"] = [
        {
            "k": int(k),
            "maj@k": out["maj@k"][k],
            "pass@k": out["pass@k"][k],
            "total_tokens": int(k) * out["mean_length"],
            "latency_tokens": float(
                np.mean([p["latency_tokens"] for m in items for p in m["parallel_thinking"] if str(p["k"]) == k])
            ),
        }
        for k in ks
    ]
    return out


def length_cut(length: float, baseline: float) -> float:
    """Length change against a baseline in percent: -76.0 means 76% fewer tokens."""
    if baseline <= 0:
        raise ValueError(f"baseline length must be positive, got {baseline}")
    return 100.0 * (length - baseline) / baseline
