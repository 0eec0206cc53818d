"""Evaluation metrics: pass@k, the errors of pass@1, paired differences between runs, and the summary of one
benchmark (`summarize`) and of several (`overall`) that results.json holds.

Everything here is pure Python (and numpy) on graded records (`dler.eval.graded`), so it is unit-tested on
hand-made numbers and recomputed by `dler report` without a model. For one benchmark with P problems and n
samples each, p_i is problem i's mean correctness (correct samples / n). Definitions (also in docs/evaluation.md):

- pass@1: mean correctness over problems x samples (= the mean of p_i).
- pass@1_se: the standard error of pass@1 as an estimate over a *population of problems*: the sample standard
  deviation of the p_i (ddof=1) / sqrt(P); 0.0 when P == 1. It includes the sampling noise of the p_i (each is a
  mean of n draws), so it is the error bar for "how good is this model on problems like these".
- pass@1_sampling_se: the error from the finite samples alone, the problems held fixed:
  `sqrt(sum_i p_i (1 - p_i) / (n - 1)) / P`, where p_i (1 - p_i) / (n - 1) is the unbiased estimate of the
  variance of a mean of n Bernoulli draws. Undefined for n == 1 (None). The error bar for "would another seed give
  the same number on these problems".
- paired difference of two runs on the same problems (`paired_difference`): the mean of d_i = b_i - a_i, its
  standard error std(d_i, ddof=1) / sqrt(P), and a normal 95% interval. Problems are shared, so their difficulty
  cancels: much tighter than combining two pass@1_se.
- pass@k: the unbiased estimator of Chen et al. (2021), `1 - C(n-c, k) / C(n, k)` per problem, averaged over
  problems; computed as a running product of ratios (`pass_at_k`, `pass_at_k_curve`), which never forms the huge
  binomials. Default k: powers of two up to n, and n itself.
- maj@k: the expected majority-vote correctness of k samples drawn without replacement (`dler.eval.majority`).
- lengths: mean tokens per sample over all samples, over correct samples and over incorrect samples.
- truncation rate: fraction of samples cut off by the generation cap.
- accuracy per 1,000 tokens: pass@1 / (mean length / 1000).
- parallel thinking: for each k, maj@k against the tokens spent on k samples per problem (k x mean length), and
  against the latency of running them in parallel: the expected longest of k samples (`dler.eval.lengths`).
- budget curve and length histogram: see `dler.eval.lengths`.
- overall pass@1_se: sqrt(sum_b se_b^2) / B over B benchmarks, the error of their macro average, assuming the
  benchmarks' errors are independent (they are: different problems, independent samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from dler.eval.graded import (
    check_ks,
    combined_se,
    correct_matrix,
    default_ks,
    is_integer,
    standard_error,
    token_arrays,
)
from dler.eval.lengths import budget_curve, expected_max, length_histogram
from dler.eval.majority import maj_at_k_over_problems

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct answers among `n` samples (Chen et al. 2021).

    `1 - C(n-c, k) / C(n, k)`: the probability that at least one of k samples drawn without replacement from the
    n is correct. Computed as `1 - prod(1 - k / arange(n-c+1, n+1))`; exactly 1.0 when `n - c < k`.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not is_integer(value):
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


def mean_pass_at_k(correct: Sequence[Sequence[float]], k: int) -> float:
    """pass@k averaged over problems; `correct[i]` holds problem i's per-sample scores (>= 0.5 counts correct)."""
    if not correct:
        raise ValueError("no problems")
    return float(np.mean([pass_at_k(len(row), sum(1 for x in row if x >= 0.5), k) for row in correct]))


def pass_at_k_curve(correct_counts: Sequence[int], n: int, ks: Sequence[int] | None = None) -> dict[int, float]:
    """pass@k averaged over problems for every k in `ks` (default: 1..n), from each problem's number of correct
    samples among n.

    Per problem `C(n-c, k) / C(n, k) = prod_{j<k} (n-c-j) / (n-j)`, a running product of ratios in [0, 1]: no
    binomial is formed, nothing overflows, and the relative error grows only like k x machine epsilon. Problems
    with the same c share one row, so 500 problems at n = 1024 cost one (distinct c) x n product.
    """
    if not is_integer(n) or n < 1:
        raise ValueError(f"pass_at_k_curve: n (samples per problem) must be an integer >= 1, got {n!r}")
    n = int(n)
    counts = np.asarray(correct_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError("pass_at_k_curve: correct_counts must be a non-empty sequence of integers")
    if not np.issubdtype(counts.dtype, np.integer):
        raise TypeError(f"pass_at_k_curve: correct counts must be integers, got dtype {counts.dtype}")
    if counts.min() < 0 or counts.max() > n:
        bad = [int(c) for c in counts if not 0 <= c <= n][:5]
        raise ValueError(f"pass_at_k_curve: correct counts must be in [0, n] = [0, {n}], got {bad}")
    ks = check_ks(range(1, n + 1) if ks is None else ks, n, "pass_at_k_curve")
    kmax = max(ks)
    values, weights = np.unique(counts, return_counts=True)
    j = np.arange(kmax, dtype=np.float64)  # factor j of the product: (n - c - j) / (n - j)
    factors = np.clip((n - values[:, None] - j[None, :]) / (n - j[None, :]), 0.0, 1.0)
    miss = np.cumprod(factors, axis=1)  # miss[:, k-1] = C(n-c, k) / C(n, k)
    curve = 1.0 - (weights @ miss) / counts.size
    return {k: float(curve[k - 1]) for k in ks}


# --------------------------------------------------------------------------------------------- standard errors


def sampling_standard_error(per_problem: Sequence[float], n: int) -> float | None:
    """The error of pass@1 from the finite samples alone, problems held fixed:
    `sqrt(sum_i p_i (1 - p_i) / (n - 1)) / P` for per-problem mean correctness p_i over n samples each.

    `p (1 - p) / (n - 1)` is the unbiased estimate of the variance of a mean of n Bernoulli draws (the sample
    variance n p (1 - p) / (n - 1), over n). Undefined for n == 1: returns None."""
    p = np.asarray(per_problem, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("sampling_standard_error: need a non-empty sequence of per-problem means")
    if not is_integer(n) or n < 1:
        raise ValueError(f"sampling_standard_error: n must be an integer >= 1, got {n!r}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("sampling_standard_error: per-problem means must be in [0, 1]")
    if n == 1:
        return None
    return float(math.sqrt(float(np.sum(p * (1.0 - p))) / (n - 1)) / p.size)


def per_problem_means(records: Sequence[dict[str, Any]]) -> dict[Any, float]:
    """Mean correctness of each problem, keyed by its `index` (its position when a record has none): the input of
    `paired_difference`."""
    out: dict[Any, float] = {}
    for pos, r in enumerate(records):
        key = r.get("index", pos)
        if key in out:
            raise ValueError(f"problem index {key!r} appears twice")
        scores = r["correct"]
        if not scores:
            raise ValueError(f"problem {key!r} has no samples")
        out[key] = sum(1 for x in scores if float(x) >= 0.5) / len(scores)
    return out


def paired_difference(a: dict[Any, float], b: dict[Any, float], *, intersect: bool = False) -> dict[str, Any]:
    """Compare two runs on the same problems from their per-problem mean correctness (`per_problem_means`).

    Returns `difference` (mean over problems of b_i - a_i), `se` (std of the differences, ddof=1, / sqrt(P); 0.0
    for one problem), `ci95` ([low, high], difference -/+ 1.96 se), `mean_a`, `mean_b`, `num_problems` (P, the
    shared problems) and `dropped` (problems only one run has; 0 unless `intersect`).

    Different problem sets are an error naming the problems each run lacks (a comparison on different problems
    is not paired); `intersect=True` compares the shared problems instead and reports how many were dropped.
    """
    only_a = [key for key in a if key not in b]
    only_b = [key for key in b if key not in a]
    if (only_a or only_b) and not intersect:

        def show(keys):
            keys = sorted(keys, key=repr)
            return f"{len(keys)} ({', '.join(map(repr, keys[:10]))}{', ...' if len(keys) > 10 else ''})"

        raise ValueError(
            "paired_difference: the runs cover different problems: only in a: "
            f"{show(only_a)}; only in b: {show(only_b)} (intersect=True compares the shared ones)"
        )
    shared = [key for key in a if key in b]
    if not shared:
        raise ValueError("paired_difference: the runs share no problem")
    xa = np.array([a[key] for key in shared], dtype=np.float64)
    xb = np.array([b[key] for key in shared], dtype=np.float64)
    d = xb - xa
    diff = float(np.mean(d))
    se = standard_error(d)
    return {
        "difference": diff,
        "se": se,
        "ci95": [diff - Z95 * se, diff + Z95 * se],
        "mean_a": float(np.mean(xa)),
        "mean_b": float(np.mean(xb)),
        "num_problems": len(shared),
        "dropped": len(only_a) + len(only_b),
    }


# --------------------------------------------------------------------------------------------- summaries


PER_PROBLEM_COLUMNS = ("benchmark", "index", "samples", "correct", "mean_correct", "mean_length", "truncated")


def per_problem_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per problem, keys `PER_PROBLEM_COLUMNS`: benchmark, index (the record's, else its position),
    samples, correct (correct samples), mean_correct (correct / samples), mean_length (tokens),
    truncated (truncated samples)."""
    rows = []
    for pos, r in enumerate(records):
        scores, tokens = r["correct"], r["tokens"]
        if not scores or len(tokens) != len(scores):
            raise ValueError(f"problem {r.get('index', pos)!r}: needs samples, with one token count per score")
        solved = sum(1 for x in scores if float(x) >= 0.5)
        rows.append(
            {
                "benchmark": r.get("benchmark"),
                "index": r.get("index", pos),
                "samples": len(scores),
                "correct": solved,
                "mean_correct": solved / len(scores),
                "mean_length": float(np.mean([int(t) for t in tokens])),
                "truncated": sum(1 for t in r.get("truncated", ()) if t),
            }
        )
    return rows


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def summarize(
    records: Sequence[dict[str, Any]],
    ks: Sequence[int] | None = None,
    *,
    same: Callable[[str, str], bool] | None = None,
    budgets: Sequence[int] | None = None,
    bins: int = 20,
) -> dict[str, Any]:
    """Metrics of one benchmark from its graded records (one per problem, all with the same number of samples).

    ks (pass@k, maj@k, parallel_thinking) default to `default_ks(n)`: powers of two up to n, and n. `same` is the
    answer equivalence of maj@k (default: equal `normalize_vote` strings); `budgets` and `bins` go to
    `budget_curve` and `length_histogram`. Keys: see the module docstring and docs/evaluation.md."""
    if not records:
        raise ValueError("no graded records to summarise")
    correct = correct_matrix(records)
    problems, n = correct.shape
    ks = check_ks(default_ks(n) if ks is None else ks, n, "summarize")
    tokens = token_arrays(records)
    if any(t.size != n for t in tokens):
        raise ValueError("every record needs one token count per score")
    truncated = [[bool(t) for t in r["truncated"]] for r in records]
    flat_correct = correct.ravel()
    flat_tokens = np.concatenate(tokens)
    per_problem = correct.mean(axis=1)
    pass1 = float(flat_correct.mean())
    mean_len = float(flat_tokens.mean())
    curve = pass_at_k_curve(correct.sum(axis=1), n, ks)
    pass_k = {str(k): curve[k] for k in ks}
    maj, maj_exact = maj_at_k_over_problems(records, ks, same=same)
    maj_k = {str(k): maj[k] for k in ks}
    parallel = [
        {
            "k": k,
            "maj@k": maj_k[str(k)],
            "pass@k": pass_k[str(k)],
            "total_tokens": k * mean_len,
            "latency_tokens": float(np.mean([expected_max(t, k) for t in tokens])),
        }
        for k in ks
    ]
    return {
        "num_problems": problems,
        "n": n,
        "pass@1": pass1,
        "pass@1_se": standard_error(per_problem),
        "pass@1_sampling_se": sampling_standard_error(per_problem, n),
        "pass@k": pass_k,
        "maj@k": maj_k,
        "maj@k_exact": maj_exact,
        "mean_length": mean_len,
        "median_length": float(np.median(flat_tokens)),
        "mean_length_correct": _mean(flat_tokens[flat_correct]),
        "mean_length_incorrect": _mean(flat_tokens[~flat_correct]),
        "truncation_rate": float(np.mean([t for row in truncated for t in row])),
        "accuracy_per_1k_tokens": pass1 / (mean_len / 1000) if mean_len > 0 else None,
        "parallel_thinking": parallel,
        # problems the model solved in some / every sample: the "occasionally solvable" set of 2504.05185
        "solved_any": float(correct.any(axis=1).mean()),
        "solved_all": float(correct.all(axis=1).mean()),
        "budget_curve": budget_curve(records, budgets),
        "length_histogram": length_histogram(records, bins),
    }


def think_unclosed(records: Sequence[dict[str, Any]], think_end: str = "</think>") -> float:
    """The fraction of responses that never close their thinking with `think_end`: all of them score 0 when the
    answer is read after it (a model that answers without thinking tags, graded as a thinking one)."""
    responses = [text for r in records for text in r["responses"]]
    return sum(think_end not in text for text in responses) / max(1, len(responses))


def overall(per_benchmark: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Macro averages over benchmarks (each benchmark weighs the same, as in the paper's averages), plus the
    micro pass@1 over every sample of every benchmark, and the standard errors of the macro pass@1
    (sqrt of the sum of the squared per-benchmark errors / number of benchmarks: benchmarks are independent)."""
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
        "pass@1_se": combined_se([m.get("pass@1_se") for m in items]),
        "pass@1_sampling_se": combined_se([m.get("pass@1_sampling_se") for m in items]),
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
