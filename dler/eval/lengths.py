"""Length analyses of graded records: the expected longest of k samples, budget curves and length histograms.

- parallel latency: the expected longest of k samples drawn without replacement (exact, from the order
  statistics), the time k samples generated in parallel take.
- budget curve: accuracy if every response were cut at B tokens: a sample counts at budget B only if it was
  correct and at most B tokens long (a longer one would have been cut before its answer).
- length histogram: response lengths of correct and incorrect samples, for all problems and by difficulty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dler.eval.graded import check_ks, correct_matrix, is_integer, standard_error, token_arrays


def expected_max(values: Sequence[float], k: int) -> float:
    """Expected largest of k values drawn uniformly without replacement from `values`: with x_(1) <= ... <= x_(n),
    `sum_j x_(j) C(j-1, k-1) / C(n, k)`, the weights formed as a running product (no binomials)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("expected_max: no values")
    (k,) = check_ks([k], n, "expected_max")
    j = np.arange(n, k, -1, dtype=np.float64)  # weight of x_(j-1) = weight of x_(j) x (j - k) / (j - 1)
    weights = (k / n) * np.concatenate(([1.0], np.cumprod((j - k) / (j - 1))))
    return float(np.dot(weights, x[::-1][: n - k + 1]))


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
    correct = correct_matrix(records)
    tokens = np.stack(token_arrays(records))
    if tokens.shape != correct.shape:
        raise ValueError("every record needs one token count per score")
    if budgets is None:
        budgets = default_budgets(int(tokens.max()))
    out: dict[str, list] = {"budgets": [], "accuracy": [], "accuracy_se": []}
    for b in budgets:
        if not is_integer(b) or b < 0:
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
    if not is_integer(bins) or bins < 1:
        raise ValueError(f"length_histogram: bins must be an integer >= 1, got {bins!r}")
    if not records:
        raise ValueError("no graded records")
    correct = [np.array([float(x) >= 0.5 for x in r["correct"]], dtype=bool) for r in records]
    tokens = token_arrays(records)
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
