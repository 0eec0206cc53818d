"""Evaluation metrics: pass@k, majority vote, lengths by correctness, accuracy per token spent, and the errors of
these estimates.

Everything here is pure Python (and numpy) on graded records, so it is unit-tested on hand-made numbers and
recomputed by `dler report` without a model. A *graded record* is one problem with its n samples:

    {"benchmark": "aime24", "index": 3,
     "correct": [1.0, 0.0, ...],            # one score per sample (the project's math reward)
     "extracted": ["204", None, ...],       # the answer the grader read in each sample (None: no answer)
     "tokens": [5120, 32768, ...],          # response length in tokens, EOS included
     "truncated": [false, true, ...]}       # hit the generation cap without EOS

A sample is *correct* when its score is >= 0.5. For one benchmark with P problems and n samples each, p_i is
problem i's mean correctness (correct samples / n). Definitions (also in docs/evaluation.md):

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
- maj@k: the expected majority-vote correctness of k samples drawn uniformly *without replacement* from the n
  (every k-subset equally likely). Answers vote in classes of an equivalence `same(a, b)` (default: equal
  `normalize_vote` strings); samples without an answer do not vote; a subset where no sample answered scores 0;
  when several classes tie for the most votes the vote picks one of them uniformly at random, so a tie scores the
  fraction of tied classes that are correct. A class is correct when any of its samples was graded correct.
  Computed exactly (a generating-function dynamic programme over answer classes, see `maj_at_k`) unless that is
  too costly (large n with several large classes), then estimated from `MAJ_PERMUTATIONS` seeded random
  permutations (every prefix of a uniform permutation is a uniform k-subset); `maj@k_exact` says whether every
  problem was computed exactly.
- lengths: mean tokens per sample over all samples, over correct samples and over incorrect samples.
- truncation rate: fraction of samples cut off by the generation cap.
- accuracy per 1,000 tokens: pass@1 / (mean length / 1000).
- parallel thinking: for each k, maj@k against the tokens spent on k samples per problem (k x mean length), and
  against the latency of running them in parallel: the expected longest of k samples drawn without replacement
  (mean over problems; exact, from the order statistics).
- budget curve: accuracy if every response were cut at B tokens: a sample counts at budget B only if it was
  correct and at most B tokens long (a longer one would have been cut before its answer).
- overall pass@1_se: sqrt(sum_b se_b^2) / B over B benchmarks, the error of their macro average, assuming the
  benchmarks' errors are independent (they are: different problems, independent samples).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal
MAJ_PERMUTATIONS = 2000  # random permutations per problem when maj@k is estimated rather than computed exactly
MAJ_MAX_EXACT_COST = 300_000_000  # estimated array-element operations above which maj@k of one problem is sampled
MAJ_MAX_EXACT_N = 1200  # beyond this n the scaled binomial weights of the exact maj@k could overflow a float64
_RHO = 2.0**-0.5  # the exact maj@k scales C(m, a) by _RHO**a so that no weight overflows for n <= 1200


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


def default_ks(n: int) -> list[int]:
    """The default k of pass@k and maj@k in `summarize`: powers of two up to n, and n itself."""
    return sorted(set(powers_of_two(n)) | {int(n)})


def _check_ks(ks: Iterable[int], n: int, what: str) -> list[int]:
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"{what}: k must be an integer, got {k!r}")
        if not 1 <= k <= n:
            raise ValueError(f"{what}: k must be in [1, n] = [1, {n}], got k={k}")
        out.append(int(k))
    if not out:
        raise ValueError(f"{what}: no k given")
    return out


def pass_at_k_curve(correct_counts: Sequence[int], n: int, ks: Sequence[int] | None = None) -> dict[int, float]:
    """pass@k averaged over problems for every k in `ks` (default: 1..n), from each problem's number of correct
    samples among n.

    Per problem `C(n-c, k) / C(n, k) = prod_{j<k} (n-c-j) / (n-j)`, a running product of ratios in [0, 1]: no
    binomial is formed, nothing overflows, and the relative error grows only like k x machine epsilon. Problems
    with the same c share one row, so 500 problems at n = 1024 cost one (distinct c) x n product.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
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
    ks = _check_ks(range(1, n + 1) if ks is None else ks, n, "pass_at_k_curve")
    kmax = max(ks)
    values, weights = np.unique(counts, return_counts=True)
    j = np.arange(kmax, dtype=np.float64)  # factor j of the product: (n - c - j) / (n - j)
    factors = np.clip((n - values[:, None] - j[None, :]) / (n - j[None, :]), 0.0, 1.0)
    miss = np.cumprod(factors, axis=1)  # miss[:, k-1] = C(n-c, k) / C(n, k)
    curve = 1.0 - (weights @ miss) / counts.size
    return {k: float(curve[k - 1]) for k in ks}


# --------------------------------------------------------------------------------------------- standard errors


def _correct_matrix(records: Sequence[dict[str, Any]]) -> np.ndarray:
    """Problems x samples booleans (score >= 0.5); every problem must have the same number of samples."""
    if not records:
        raise ValueError("no graded records")
    sizes = {len(r["correct"]) for r in records}
    if len(sizes) != 1:
        raise ValueError(f"every problem must have the same number of samples, got {sorted(sizes)}")
    if sizes == {0}:
        raise ValueError("records have no samples")
    return np.array([[float(x) >= 0.5 for x in r["correct"]] for r in records], dtype=bool)


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


def sampling_standard_error(per_problem: Sequence[float], n: int) -> float | None:
    """The error of pass@1 from the finite samples alone, problems held fixed:
    `sqrt(sum_i p_i (1 - p_i) / (n - 1)) / P` for per-problem mean correctness p_i over n samples each.

    `p (1 - p) / (n - 1)` is the unbiased estimate of the variance of a mean of n Bernoulli draws (the sample
    variance n p (1 - p) / (n - 1), over n). Undefined for n == 1: returns None."""
    p = np.asarray(per_problem, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("sampling_standard_error: need a non-empty sequence of per-problem means")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
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


# --------------------------------------------------------------------------------------------- answer keys, first-k vote

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
    """Majority vote of the *first* k samples of one problem: is their most frequent answer correct? (1.0 or 0.0)

    Samples without an extracted answer do not vote; ties between answers go to the one that appeared first.
    One draw of k samples, kept for callers that want it; `summarize`'s maj@k is the unbiased `maj_at_k`.
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


# --------------------------------------------------------------------------------------------- unbiased maj@k


def _label_answers(
    extracted: Sequence[str | None], correct: Sequence[float], same: Callable[[str, str], bool] | None
) -> tuple[list[int], list[bool]]:
    """Each sample's answer class (-1: no answer) and whether each class is correct, classes in order of first
    appearance. A sample has no answer when `normalize_vote` makes it None (None, empty or blank). With `same`,
    an answer joins the first class whose first answer `r` has `same(r, answer)`, so `same` runs at most
    n x classes times; without it answers are grouped by their `normalize_vote` key."""
    if len(extracted) != len(correct):
        raise ValueError(f"{len(extracted)} extracted answers but {len(correct)} scores")
    labels: list[int] = []
    class_correct: list[bool] = []
    keys: dict[str, int] = {}
    representatives: list[str] = []
    for answer, score in zip(extracted, correct, strict=True):
        if answer is not None and not isinstance(answer, str):
            answer = str(answer)
        key = normalize_vote(answer)
        if key is None:
            labels.append(-1)
            continue
        if same is None:
            label = keys.setdefault(key, len(class_correct))
        else:
            label = next((i for i, r in enumerate(representatives) if same(r, answer)), len(class_correct))
            if label == len(representatives):
                representatives.append(answer)
        if label == len(class_correct):
            class_correct.append(False)
        if float(score) >= 0.5:
            class_correct[label] = True
        labels.append(label)
    return labels, class_correct


def answer_classes(
    extracted: Sequence[str | None],
    correct: Sequence[float],
    same: Callable[[str, str], bool] | None = None,
) -> tuple[list[tuple[int, bool]], int]:
    """Group one problem's answers into vote classes: ([(votes, is_correct), ...] in order of first appearance,
    number of samples without an answer).

    `same(a, b)` is the grader's equivalence (e.g. `0.5` and `\\frac12` vote together); default: equal
    `normalize_vote` strings. Each new answer is compared with the first answer of each class (O(n x classes)
    calls), so `same` should be an equivalence relation. A class is correct when any of its samples was graded
    correct (score >= 0.5)."""
    labels, class_correct = _label_answers(extracted, correct, same)
    votes = [0] * len(class_correct)
    for label in labels:
        if label >= 0:
            votes[label] += 1
    return list(zip(votes, class_correct, strict=True)), labels.count(-1)


def _scaled_binomials(m: int, upto: int) -> np.ndarray:
    """C(m, a) * _RHO**a for a = 0..min(m, upto), by a running product (no huge integers)."""
    a = np.arange(1, min(m, upto) + 1, dtype=np.float64)
    return np.concatenate(([1.0], np.cumprod((m - a + 1) / a * _RHO)))


def _maj_plan(votes: np.ndarray, is_correct: np.ndarray, kmax: int) -> tuple[int, int]:
    """(last level t handled by the dynamic programme, its estimated cost in array-element operations)."""
    if not is_correct.any():
        return 0, 0
    top = int(votes[is_correct].max())
    runner_up = int(np.sort(votes)[-2]) if votes.size > 1 else 0
    t_dp = min(kmax, top, runner_up)  # above the runner-up the leader is alone: closed form
    cost = 0
    for t in range(1, t_dp + 1):
        big = int(np.count_nonzero(votes >= t))
        ties = min(big, kmax // t)
        cost += big * (kmax + 1) * 2 * (ties + 1) * min(t, 2 * (ties + 1)) + big * 2000
    return t_dp, cost


def _maj_exact(votes: np.ndarray, is_correct: np.ndarray, unanswered: int, ks: list[int]) -> dict[int, float]:
    """Exact maj@k for every k in ks (see `maj_at_k`)."""
    n = int(votes.sum()) + unanswered
    kmax = max(ks)
    if not is_correct.any():
        return {k: 0.0 for k in ks}
    t_dp, _ = _maj_plan(votes, is_correct, kmax)
    total = np.zeros(kmax + 1)  # sum over k-subsets of the score, x _RHO**k
    for t in range(1, t_dp + 1):
        # classes with fewer than t votes can never reach t: together with the unanswered samples they are free
        big = votes >= t
        free = unanswered + int(votes[~big].sum())
        ties = min(int(big.sum()), kmax // t)
        # state[s, 0, m]: weight of the drawn-so-far vote vectors over s samples, every class < t votes except m
        # classes at exactly t; state[s, 1, m]: the same weighted by the number of correct classes among those m
        state = np.zeros((kmax + 1, 2, ties + 1))
        state[0, 0, 0] = 1.0
        for m_j, ok in zip(votes[big], is_correct[big], strict=True):
            coef = _scaled_binomials(int(m_j), t)
            new = np.zeros_like(state)
            if t <= 2 * (ties + 1):  # below t votes: convolve along s, one shifted copy per count
                for a in range(t):
                    new[a:] += coef[a] * state[: kmax + 1 - a]
            else:
                for col in range(ties + 1):
                    for row in range(2):
                        new[:, row, col] = np.convolve(state[:, row, col], coef[:t])[: kmax + 1]
            # exactly t votes (t <= kmax): one more tied class, and one more correct one when ok
            shifted = state[: kmax + 1 - t, :, :-1]
            new[t:, 0, 1:] += coef[t] * shifted[:, 0]
            new[t:, 1, 1:] += coef[t] * (shifted[:, 1] + (1.0 if ok else 0.0) * shifted[:, 0])
            state = new
        score = (state[:, 1, 1:] / np.arange(1, ties + 1)).sum(axis=1)  # a tie scores correct / tied
        total += np.convolve(score, _scaled_binomials(free, kmax))[: kmax + 1]
    # levels above the runner-up: only the top class can reach them, and alone it wins
    lead = int(np.argmax(np.where(is_correct, votes, -1)))
    if t_dp < kmax and all(votes[i] <= t_dp for i in range(votes.size) if i != lead):
        m_j = int(votes[lead])
        coef = _scaled_binomials(m_j, kmax)
        rest = np.zeros(kmax + 1)
        rest[: min(n - m_j, kmax) + 1] = _scaled_binomials(n - m_j, kmax)
        for t in range(t_dp + 1, min(m_j, kmax) + 1):
            total[t:] += coef[t] * rest[: kmax + 1 - t]
    norm = _scaled_binomials(n, kmax)
    # rounded to 12 decimals: the programme's float error is ~1e-15, and simple fractions (1/2, 1) come out exact
    return {k: round(float(min(1.0, max(0.0, total[k] / norm[k]))), 12) for k in ks}


def _maj_sampled(
    labels: Sequence[int], class_correct: Sequence[bool], ks: list[int], permutations: int, seed: Any
) -> dict[int, float]:
    """maj@k estimated over `permutations` uniform random permutations: each prefix of length k is a uniform
    k-subset, so one pass over a permutation scores every k. Ties score correct / tied, as in the exact form."""
    rng = np.random.default_rng(seed)
    n, kmax, classes = len(labels), max(ks), len(class_correct)
    lab = np.asarray(labels, dtype=np.int64)
    lab = np.where(lab < 0, classes, lab)  # no answer: a sink column that never votes
    corr = np.append(np.asarray(class_correct, dtype=np.float64), 0.0)
    order = rng.permuted(np.tile(np.arange(n), (permutations, 1)), axis=1)[:, :kmax]
    drawn = lab[order]
    rows = np.arange(permutations)
    counts = np.zeros((permutations, classes + 1), dtype=np.int64)
    top = np.zeros(permutations, dtype=np.int64)
    tied = np.zeros(permutations)
    tied_correct = np.zeros(permutations)
    wanted, out = set(ks), {}
    for i in range(kmax):
        c = drawn[:, i]
        counts[rows, c] += 1
        v = np.where(c == classes, 0, counts[rows, c])
        up = v > top
        eq = ((v == top) & (v > 0)).astype(np.float64)
        tied = np.where(up, 1.0, tied + eq)
        tied_correct = np.where(up, corr[c], tied_correct + eq * corr[c])
        top = np.maximum(top, v)
        if i + 1 in wanted:
            out[i + 1] = float(np.mean(np.where(top > 0, tied_correct / np.maximum(tied, 1.0), 0.0)))
    return out


def maj_at_k(
    classes: Sequence[tuple[int, bool]],
    unanswered: int,
    ks: Sequence[int],
    *,
    method: str = "auto",
    permutations: int = MAJ_PERMUTATIONS,
    seed: Any = 0,
) -> dict[int, float]:
    """Unbiased maj@k of one problem for every k in ks, from its `answer_classes`: the expected majority-vote
    correctness of k of its n samples drawn uniformly without replacement.

    Ties between the most-voted classes are broken uniformly at random (a tie scores the fraction of tied classes
    that are correct); samples without an answer do not vote; a k-subset without any answer scores 0.

    `method="exact"`: the number of k-subsets with vote counts (a_1, ..., a_C, a_none) is
    `prod_j C(m_j, a_j) x C(u, a_none)` (multivariate hypergeometric). For each level t, a dynamic programme over
    the classes with at least t votes sums these weights over vote vectors whose maximum is t, keeping the number
    of classes tied at t and how many of them are correct; classes with fewer than t votes and the unanswered
    samples enter as one binomial; every k comes out of the same pass as a polynomial coefficient. Above the
    runner-up's vote count only the leader can win, which is closed form. Weights are C(m, a) x 2^(-a/2), so
    nothing overflows for n <= 1200. `method="sample"`: the mean over `permutations` seeded uniform random
    permutations of the score of their first k samples (standard error <= 0.5 / sqrt(permutations) per k).
    `method="auto"` (what `summarize` uses): exact unless n > MAJ_MAX_EXACT_N or the programme's estimated cost
    exceeds MAJ_MAX_EXACT_COST (many large classes at large n), then sampled. Exact values are rounded to 12
    decimals (the programme's float error is ~1e-15; simple fractions such as 1/2 come out exact).
    """
    if method not in ("auto", "exact", "sample"):
        raise ValueError(f"maj_at_k: method must be 'auto', 'exact' or 'sample', got {method!r}")
    votes = np.array([int(m) for m, _ in classes], dtype=np.int64)
    is_correct = np.array([bool(ok) for _, ok in classes], dtype=bool)
    if np.any(votes < 1) or unanswered < 0:
        raise ValueError("maj_at_k: every class needs >= 1 vote and unanswered must be >= 0")
    n = int(votes.sum()) + int(unanswered)
    if n < 1:
        raise ValueError("maj_at_k: no samples")
    ks = _check_ks(ks, n, "maj_at_k")
    if method == "auto":
        exact = n <= MAJ_MAX_EXACT_N and _maj_plan(votes, is_correct, max(ks))[1] <= MAJ_MAX_EXACT_COST
        method = "exact" if exact else "sample"
    if method == "exact":
        if n > MAJ_MAX_EXACT_N:
            raise ValueError(f"maj_at_k: exact computation supports n <= {MAJ_MAX_EXACT_N}, got n={n}")
        return _maj_exact(votes, is_correct, int(unanswered), ks)
    if permutations < 1:
        raise ValueError(f"maj_at_k: permutations must be >= 1, got {permutations}")
    labels = [j for j, m in enumerate(votes) for _ in range(int(m))] + [-1] * int(unanswered)
    return _maj_sampled(labels, list(is_correct), ks, permutations, seed)


def maj_at_k_is_exact(classes: Sequence[tuple[int, bool]], unanswered: int, kmax: int) -> bool:
    """Whether `maj_at_k(..., method="auto")` computes this problem exactly (else it samples permutations)."""
    votes = np.array([int(m) for m, _ in classes], dtype=np.int64)
    is_correct = np.array([bool(ok) for _, ok in classes], dtype=bool)
    n = int(votes.sum()) + int(unanswered)
    return n <= MAJ_MAX_EXACT_N and _maj_plan(votes, is_correct, kmax)[1] <= MAJ_MAX_EXACT_COST


def mean_maj_at_k(
    records: Sequence[dict[str, Any]],
    ks: Sequence[int] | None = None,
    *,
    same: Callable[[str, str], bool] | None = None,
    method: str = "auto",
    permutations: int = MAJ_PERMUTATIONS,
    seed: int = 0,
) -> dict[int, float]:
    """Unbiased maj@k averaged over problems (`answer_classes` + `maj_at_k` per problem; ks default
    `default_ks(n)`). A sampled problem uses the seed `(seed, its index)`, so results do not depend on order."""
    return _mean_maj(records, ks, same, method, permutations, seed)[0]


def _mean_maj(records, ks, same, method, permutations, seed) -> tuple[dict[int, float], bool]:
    n = _correct_matrix(records).shape[1]
    ks = _check_ks(default_ks(n) if ks is None else ks, n, "maj@k")
    total = dict.fromkeys(ks, 0.0)
    exact = True
    for pos, r in enumerate(records):
        classes, unanswered = answer_classes(r["extracted"], r["correct"], same)
        index = r.get("index", pos)
        problem_seed = (seed, index) if isinstance(index, int) and index >= 0 else (seed, pos)
        if method == "sample" or (method == "auto" and not maj_at_k_is_exact(classes, unanswered, max(ks))):
            exact = False
        for k, v in maj_at_k(classes, unanswered, ks, method=method, permutations=permutations,
                             seed=problem_seed).items():  # fmt: skip
            total[k] += v
    return {k: v / len(records) for k, v in total.items()}, exact


# --------------------------------------------------------------------------------------------- lengths


def expected_max(values: Sequence[float], k: int) -> float:
    """Expected largest of k values drawn uniformly without replacement from `values`: with x_(1) <= ... <= x_(n),
    `sum_j x_(j) C(j-1, k-1) / C(n, k)`, the weights formed as a running product (no binomials)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("expected_max: no values")
    (k,) = _check_ks([k], n, "expected_max")
    j = np.arange(n, k, -1, dtype=np.float64)  # weight of x_(j-1) = weight of x_(j) x (j - k) / (j - 1)
    weights = (k / n) * np.concatenate(([1.0], np.cumprod((j - k) / (j - 1))))
    return float(np.dot(weights, x[::-1][: n - k + 1]))


def _tokens(records: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    return [np.asarray([int(t) for t in r["tokens"]], dtype=np.int64) for r in records]


def default_budgets(max_length: int) -> list[int]:
    """256, 512, 1024, ... below the longest response, then the longest response itself."""
    budgets, b = [], 256
    while b < max_length:
        budgets.append(b)
        b *= 2
    return budgets + [int(max_length)]


def budget_curve(records: Sequence[dict[str, Any]], budgets: Sequence[int] | None = None) -> dict[str, list]:
    """Accuracy if every response were cut at B tokens: a sample counts as correct at budget B only if it was
    correct and at most B tokens long (a longer one would have been cut before its answer).

    Returns {"budgets": [...], "accuracy": [...], "accuracy_se": [...]}: accuracy is the mean over problems x
    samples, accuracy_se its standard error over problems (`standard_error` of the per-problem means, as
    pass@1_se). Default budgets: `default_budgets(longest response)`."""
    correct = _correct_matrix(records)
    tokens = np.stack(_tokens(records))
    if tokens.shape != correct.shape:
        raise ValueError("every record needs one token count per score")
    if budgets is None:
        budgets = default_budgets(int(tokens.max()))
    out: dict[str, list] = {"budgets": [], "accuracy": [], "accuracy_se": []}
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 0:
            raise ValueError(f"budget_curve: budgets must be integers >= 0, got {b!r}")
        per_problem = (correct & (tokens <= b)).mean(axis=1)
        out["budgets"].append(int(b))
        out["accuracy"].append(float(per_problem.mean()))
        out["accuracy_se"].append(standard_error(per_problem))
    return out


def length_histogram(records: Sequence[dict[str, Any]], bins: int = 20) -> dict[str, Any]:
    """Histogram of response lengths with bin edges shared by every split (`bins` equal-width bins from the
    shortest to the longest sample, numpy's `histogram_bin_edges`; the last bin includes its right edge).

    Returns {"edges": [bins + 1 floats], "correct": [counts], "incorrect": [counts], "hard": {...},
    "medium": {...}, "easy": {...}}, where each difficulty holds {"problems": int, "correct": [counts],
    "incorrect": [counts]}. A problem is hard when solved in at most 1/3 of its samples, easy when in at least
    2/3, medium in between (compared as integers: 3c <= n, 3c >= 2n)."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"length_histogram: bins must be an integer >= 1, got {bins!r}")
    if not records:
        raise ValueError("no graded records")
    correct = [np.array([float(x) >= 0.5 for x in r["correct"]], dtype=bool) for r in records]
    tokens = _tokens(records)
    for c, t in zip(correct, tokens, strict=True):
        if c.size != t.size or c.size == 0:
            raise ValueError("every record needs samples, with one token count per score")
    edges = np.histogram_bin_edges(np.concatenate(tokens), bins=int(bins))

    def counts(selected):
        ok = np.concatenate([t[c] for c, t in selected]) if selected else np.zeros(0)
        bad = np.concatenate([t[~c] for c, t in selected]) if selected else np.zeros(0)
        return [int(x) for x in np.histogram(ok, edges)[0]], [int(x) for x in np.histogram(bad, edges)[0]]

    pairs = list(zip(correct, tokens, strict=True))
    ok, bad = counts(pairs)
    out: dict[str, Any] = {"edges": [float(e) for e in edges], "correct": ok, "incorrect": bad}
    groups: dict[str, list] = {"hard": [], "medium": [], "easy": []}
    for c, t in pairs:
        solved, n = int(c.sum()), c.size
        groups["hard" if 3 * solved <= n else "easy" if 3 * solved >= 2 * n else "medium"].append((c, t))
    for name, selected in groups.items():
        ok, bad = counts(selected)
        out[name] = {"problems": len(selected), "correct": ok, "incorrect": bad}
    return out


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


# --------------------------------------------------------------------------------------------- summaries


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
    correct = _correct_matrix(records)
    problems, n = correct.shape
    ks = _check_ks(default_ks(n) if ks is None else ks, n, "summarize")
    tokens = _tokens(records)
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
    maj, maj_exact = _mean_maj(records, ks, same, "auto", MAJ_PERMUTATIONS, 0)
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


def _combined_se(items: list[dict[str, Any]], key: str) -> float | None:
    """sqrt(sum se_b^2) / B: the error of a macro average of B independent benchmark estimates."""
    values = [m.get(key) for m in items]
    if any(v is None for v in values):
        return None
    return float(math.sqrt(sum(v * v for v in values)) / len(values))


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
        "pass@1_se": _combined_se(items, "pass@1_se"),
        "pass@1_sampling_se": _combined_se(items, "pass@1_sampling_se"),
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
