"""Majority vote: maj@k, the expected correctness of a vote among k samples of one problem.

maj@k is the expected majority-vote correctness of k samples drawn uniformly *without replacement* from the n
(every k-subset equally likely). Answers vote in classes of an equivalence `same(a, b)` (default: equal
`normalize_vote` strings); samples without an answer do not vote; a subset where no sample answered scores 0;
when several classes tie for the most votes the vote picks one of them uniformly at random, so a tie scores the
fraction of tied classes that are correct. A class is correct when any of its samples was graded correct.
Computed exactly (a generating-function dynamic programme over answer classes, see `maj_at_k`) unless that is
too costly (large n with several large classes), then estimated from `MAJ_PERMUTATIONS` seeded random
permutations (every prefix of a uniform permutation is a uniform k-subset); `maj@k_exact` says whether every
problem was computed exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dler.eval.graded import check_ks, correct_matrix, default_ks

MAJ_PERMUTATIONS = 2000  # random permutations per problem when maj@k is estimated rather than computed exactly
MAJ_MAX_EXACT_COST = 300_000_000  # estimated array-element operations above which maj@k of one problem is sampled
MAJ_MAX_EXACT_N = 1200  # beyond this n the scaled binomial weights of the exact maj@k could overflow a float64
_RHO = 2.0**-0.5  # the exact maj@k scales C(m, a) by _RHO**a so that no weight overflows for n <= 1200

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
    votes, is_correct, n = _class_arrays(classes, unanswered)
    if np.any(votes < 1) or unanswered < 0:
        raise ValueError("maj_at_k: every class needs >= 1 vote and unanswered must be >= 0")
    if n < 1:
        raise ValueError("maj_at_k: no samples")
    ks = check_ks(ks, n, "maj_at_k")
    if method == "auto":
        method = "exact" if _exact_is_cheap(votes, is_correct, n, max(ks)) else "sample"
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
    return _exact_is_cheap(*_class_arrays(classes, unanswered), kmax)


def _class_arrays(classes: Sequence[tuple[int, bool]], unanswered: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(votes per class, whether each class is correct, n = all votes + unanswered samples)."""
    votes = np.array([int(m) for m, _ in classes], dtype=np.int64)
    is_correct = np.array([bool(ok) for _, ok in classes], dtype=bool)
    return votes, is_correct, int(votes.sum()) + int(unanswered)


def _exact_is_cheap(votes: np.ndarray, is_correct: np.ndarray, n: int, kmax: int) -> bool:
    return n <= MAJ_MAX_EXACT_N and _maj_plan(votes, is_correct, kmax)[1] <= MAJ_MAX_EXACT_COST


def mean_maj_at_k(records: Sequence[dict[str, Any]], ks: Sequence[int] | None = None, **options) -> dict[int, float]:
    """Unbiased maj@k averaged over problems (`answer_classes` + `maj_at_k` per problem; ks default
    `default_ks(n)`). A sampled problem uses the seed `(seed, its index)`, so results do not depend on order.
    `options`: `same`, `method`, `permutations` and `seed`, as in `maj_at_k_over_problems`."""
    return maj_at_k_over_problems(records, ks, **options)[0]


def maj_at_k_over_problems(
    records: Sequence[dict[str, Any]],
    ks: Sequence[int] | None = None,
    *,
    same: Callable[[str, str], bool] | None = None,
    method: str = "auto",
    permutations: int = MAJ_PERMUTATIONS,
    seed: int = 0,
) -> tuple[dict[int, float], bool]:
    """Unbiased maj@k averaged over problems, and whether every problem was computed exactly (`maj@k_exact` of
    `summarize`). `same` is the answer equivalence of `answer_classes`; `method`, `permutations` and `seed` go to
    `maj_at_k`, a sampled problem with the seed `(seed, its index)`."""
    n = correct_matrix(records).shape[1]
    ks = check_ks(default_ks(n) if ks is None else ks, n, "maj@k")
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
