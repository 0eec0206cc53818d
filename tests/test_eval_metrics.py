"""dler.eval.metrics, majority, lengths and graded: pass@k against the exact combinatorial formula, maj@k, and the
metrics of graded records."""

import itertools
import math
import random
import statistics
import time
from fractions import Fraction

import numpy as np
import pytest

from dler.eval.graded import default_ks, powers_of_two, standard_error
from dler.eval.lengths import budget_curve, default_budgets, expected_max, length_histogram
from dler.eval.majority import (
    answer_classes,
    maj_at_k,
    maj_at_k_is_exact,
    majority_vote,
    mean_maj_at_k,
    normalize_vote,
)
from dler.eval.metrics import (
    PER_PROBLEM_COLUMNS,
    length_cut,
    mean_pass_at_k,
    overall,
    paired_difference,
    pass_at_k,
    pass_at_k_curve,
    per_problem_means,
    per_problem_rows,
    sampling_standard_error,
    summarize,
)


def exact_pass_at_k(n, c, k):
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 64, 100, 256])
def test_pass_at_k_equals_the_combinatorial_formula(n):
    ks = sorted(set(powers_of_two(n)) | {n, max(1, n // 3), max(1, n - 1)})
    for c in range(n + 1):
        for k in ks:
            got = pass_at_k(n, c, k)
            want = exact_pass_at_k(n, c, k)
            assert abs(Fraction(got) - want) <= Fraction(1, 10**12), (n, c, k, got, float(want))


def test_pass_at_k_n256_at_every_k_and_c_matches_exactly_to_float_precision():
    n = 256
    worst = 0.0
    for c in range(0, n + 1, 3):
        for k in range(1, n + 1, 5):
            worst = max(worst, abs(pass_at_k(n, c, k) - float(exact_pass_at_k(n, c, k))))
    assert worst < 1e-13


def test_pass_at_k_edge_cases():
    assert pass_at_k(16, 0, 1) == 0.0
    assert pass_at_k(16, 16, 16) == 1.0
    assert pass_at_k(16, 1, 16) == 1.0  # n - c < k: every draw of 16 contains the correct one
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert pass_at_k(256, 1, 1) == pytest.approx(1 / 256)


@pytest.mark.parametrize(
    "args, message",
    [
        ((4, 1, 5), "k must be in \\[1, n\\]"),
        ((4, 1, 0), "k must be in \\[1, n\\]"),
        ((4, 5, 1), "c \\(correct samples\\) must be in \\[0, n\\]"),
        ((4, -1, 1), "c \\(correct samples\\)"),
        ((0, 0, 1), "n \\(samples per problem\\) must be >= 1"),
    ],
)
def test_pass_at_k_rejects_bad_arguments_clearly(args, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(*args)


def test_pass_at_k_rejects_non_integers():
    with pytest.raises(TypeError, match="k must be an integer"):
        pass_at_k(4, 1, 1.5)
    with pytest.raises(TypeError, match="n must be an integer"):
        pass_at_k(True, 1, 1)


def test_powers_of_two():
    assert powers_of_two(1) == [1]
    assert powers_of_two(16) == [1, 2, 4, 8, 16]
    assert powers_of_two(20) == [1, 2, 4, 8, 16]
    assert powers_of_two(256)[-1] == 256


def test_mean_pass_at_k_averages_problems():
    correct = [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    assert mean_pass_at_k(correct, 1) == pytest.approx((0.25 + 1 + 0) / 3)
    assert mean_pass_at_k(correct, 4) == pytest.approx((1 + 1 + 0) / 3)


# --------------------------------------------------------------------------------------------- maj@k


def test_majority_vote_takes_the_most_frequent_answer_of_the_first_k():
    extracted = ["5", "7", "7", "5", "5"]
    correct = [1, 0, 0, 1, 1]
    assert majority_vote(extracted, correct, 1) == 1.0
    assert majority_vote(extracted, correct, 3) == 0.0  # 7 twice beats 5 once
    assert majority_vote(extracted, correct, 5) == 1.0  # 5 three times


def test_majority_vote_ties_go_to_the_answer_seen_first():
    assert majority_vote(["7", "5"], [0, 1], 2) == 0.0
    assert majority_vote(["5", "7"], [1, 0], 2) == 1.0
    assert majority_vote(["5", "7", "7", "5"], [1, 0, 0, 1], 4) == 1.0


def test_majority_vote_ignores_missing_answers_and_normalises_spacing():
    assert majority_vote([None, None, "3"], [0, 0, 1], 3) == 1.0
    assert majority_vote([None, None], [0, 0], 2) == 0.0
    assert majority_vote(["\\frac{1}{2}", "\\dfrac{1}{2}", "3"], [1, 1, 0], 3) == 1.0
    assert normalize_vote("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert normalize_vote("  ") is None


def test_majority_vote_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be in"):
        majority_vote(["1"], [1], 2)


# --------------------------------------------------------------------------------------------- summaries


def record(correct, tokens, truncated=None, extracted=None):
    return {
        "correct": correct,
        "tokens": tokens,
        "truncated": truncated or [False] * len(correct),
        "extracted": extracted or [("right" if c else "wrong") for c in correct],
    }


def test_summarize_hand_made_records():
    records = [
        record([1, 1, 0, 0], [100, 200, 1000, 1000], [False, False, True, True]),
        record([0, 0, 0, 0], [400, 400, 400, 400]),
    ]
    m = summarize(records)
    assert m["num_problems"] == 2 and m["n"] == 4
    assert m["pass@1"] == pytest.approx(2 / 8)
    assert m["pass@k"]["1"] == pytest.approx(0.25)
    assert m["pass@k"]["2"] == pytest.approx((1 - 1 / 6) / 2)
    assert m["pass@k"]["4"] == pytest.approx(0.5)
    assert m["mean_length"] == pytest.approx(3900 / 8)
    assert m["mean_length_correct"] == pytest.approx(150)
    assert m["mean_length_incorrect"] == pytest.approx((2000 + 1600) / 6)
    assert m["truncation_rate"] == pytest.approx(2 / 8)
    assert m["accuracy_per_1k_tokens"] == pytest.approx(0.25 / (3900 / 8 / 1000))
    # unbiased maj@k of problem 1 (right, right, wrong, wrong): k=1: 1/2; k=2: of 6 pairs, RR wins, WW loses and
    # the 4 mixed pairs tie (1/2 each): 3/6; k=4: a 2-2 tie, 1/2. Problem 2 never has a right answer.
    assert m["maj@k"] == pytest.approx({"1": 0.25, "2": 0.25, "4": 0.25})
    assert m["maj@k_exact"] is True
    assert m["solved_any"] == 0.5 and m["solved_all"] == 0.0
    p = {x["k"]: x for x in m["parallel_thinking"]}
    assert p[4]["total_tokens"] == pytest.approx(4 * 3900 / 8)
    # expected longest of 2 of (100, 200, 1000, 1000): 200 for the pair {100, 200}, 1000 for the other 5 pairs
    assert p[2]["latency_tokens"] == pytest.approx(((200 + 5 * 1000) / 6 + 400) / 2)
    assert p[4]["latency_tokens"] == pytest.approx((1000 + 400) / 2)
    assert p[1]["maj@k"] == m["maj@k"]["1"]


def test_summarize_all_correct_has_no_incorrect_length():
    m = summarize([record([1, 1], [10, 30])])
    assert m["mean_length_incorrect"] is None and m["mean_length_correct"] == 20
    assert m["pass@1"] == 1.0 and m["truncation_rate"] == 0.0


def test_summarize_rejects_uneven_sample_counts():
    with pytest.raises(ValueError, match="same number of samples"):
        summarize([record([1], [3]), record([1, 0], [3, 4])])
    with pytest.raises(ValueError, match="no graded records"):
        summarize([])


def test_overall_is_the_macro_average_and_reports_micro_pass1():
    a = summarize([record([1, 1], [10, 10])] * 3)  # 3 problems, all right
    b = summarize([record([0, 0], [30, 30])])  # 1 problem, wrong
    o = overall({"a": a, "b": b})
    assert o["pass@1"] == pytest.approx(0.5)
    assert o["pass@1_micro"] == pytest.approx(6 / 8)
    assert o["mean_length"] == pytest.approx(20)
    assert o["pass@k"]["2"] == pytest.approx(0.5)
    assert o["num_problems"] == 4
    assert [p["k"] for p in o["parallel_thinking"]] == [1, 2]


def test_random_records_pass_at_1_equals_mean_correctness():
    rng = random.Random(0)
    records = [
        record([rng.random() < 0.3 for _ in range(16)], [rng.randint(1, 100) for _ in range(16)]) for _ in range(20)
    ]
    m = summarize(records)
    assert m["pass@k"]["1"] == pytest.approx(m["pass@1"])
    assert m["pass@k"]["16"] >= m["pass@k"]["8"] >= m["pass@k"]["1"]


def test_length_cut():
    assert length_cut(2466, 10459) == pytest.approx(-76.42, abs=0.01)
    assert length_cut(100, 100) == 0
    with pytest.raises(ValueError):
        length_cut(1, 0)


def test_summarize_reports_the_new_keys_and_default_ks():
    rng = random.Random(3)
    records = [
        dict(record([rng.random() < 0.5 for _ in range(6)], [rng.randint(1, 900) for _ in range(6)]), index=i)
        for i in range(5)
    ]
    m = summarize(records)
    assert set(m["pass@k"]) == set(m["maj@k"]) == {"1", "2", "4", "6"}  # powers of two up to n, and n
    assert [p["k"] for p in m["parallel_thinking"]] == [1, 2, 4, 6]
    p = [sum(x >= 0.5 for x in r["correct"]) / 6 for r in records]
    assert m["pass@1_se"] == pytest.approx(standard_error(p))
    assert m["pass@1_sampling_se"] == pytest.approx(sampling_standard_error(p, 6))
    assert m["budget_curve"] == budget_curve(records)
    assert m["length_histogram"] == length_histogram(records)
    assert m["budget_curve"]["accuracy"][-1] == pytest.approx(m["pass@1"])  # at the longest length nothing is cut
    assert summarize(records, ks=[3])["pass@k"] == {
        "3": pytest.approx(mean_pass_at_k([r["correct"] for r in records], 3))
    }
    with pytest.raises(ValueError, match="k must be in"):
        summarize(records, ks=[7])


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(16) == [1, 2, 4, 8, 16]
    assert default_ks(20) == [1, 2, 4, 8, 16, 20]


# --------------------------------------------------------------------------------------------- pass@k curve


def exact_mean_pass_at_k(counts, n, k):
    return sum(exact_pass_at_k(n, c, k) for c in counts) / len(counts)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 40])
def test_pass_at_k_curve_equals_the_combinatorial_formula_at_every_k(n):
    rng = random.Random(n)
    counts = [rng.randint(0, n) for _ in range(9)] + [0, n]
    curve = pass_at_k_curve(counts, n)
    assert list(curve) == list(range(1, n + 1))
    for k, got in curve.items():
        assert abs(Fraction(got) - exact_mean_pass_at_k(counts, n, k)) <= Fraction(1, 10**13), (n, k)


def test_pass_at_k_curve_n1024_500_problems_is_fast_and_exact():
    n = 1024
    counts = np.random.default_rng(0).integers(0, n + 1, 500)
    counts[:4] = [0, 1, n - 1, n]
    start = time.perf_counter()
    curve = pass_at_k_curve(counts, n)
    assert time.perf_counter() - start < 2.0
    assert len(curve) == n and all(
        b >= a - 1e-15 for a, b in zip(list(curve.values())[:-1], list(curve.values())[1:], strict=True)
    )
    assert curve[1] == pytest.approx(counts.mean() / n, abs=1e-14)
    few = [0, 1, 3, 512, 1000, 1024]
    small = pass_at_k_curve(few, n, ks=[1, 2, 7, 100, 512, 1023, 1024])
    for k, got in small.items():
        assert abs(Fraction(got) - exact_mean_pass_at_k(few, n, k)) <= Fraction(1, 10**13), k
    assert small[1024] == pytest.approx(5 / 6)


def test_pass_at_k_curve_matches_a_direct_simulation():
    n, k, draws = 20, 5, 40_000
    counts = [0, 1, 3, 10, 20]
    rng = np.random.default_rng(7)
    hits = []
    for c in counts:
        samples = np.arange(n) < c  # the first c samples are the correct ones
        subsets = rng.permuted(np.tile(np.arange(n), (draws, 1)), axis=1)[:, :k]
        hits.append(samples[subsets].any(axis=1).mean())
    simulated = float(np.mean(hits))
    # standard error of the simulation <= 0.5 / sqrt(draws) / sqrt(len(counts)) ~ 0.0011
    assert pass_at_k_curve(counts, n, [k])[k] == pytest.approx(simulated, abs=0.006)
    assert pass_at_k_curve(counts, n, [k])[k] == pytest.approx(
        mean_pass_at_k([[1] * c + [0] * (n - c) for c in counts], k)
    )


def test_pass_at_k_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="correct counts must be in"):
        pass_at_k_curve([5], 4)
    with pytest.raises(ValueError, match="k must be in"):
        pass_at_k_curve([1], 4, ks=[5])
    with pytest.raises(TypeError, match="integers"):
        pass_at_k_curve([0.5], 4)
    with pytest.raises(ValueError, match="n \\(samples per problem\\)"):
        pass_at_k_curve([0], 0)


# --------------------------------------------------------------------------------------------- standard errors


def test_standard_errors_by_hand():
    p = [1.0, 0.5, 0.0, 0.5]  # n = 4 samples per problem
    # deviations from 0.5: 0.5, 0, -0.5, 0 -> variance (ddof=1) 0.5 / 3
    assert standard_error(p) == pytest.approx(math.sqrt(0.5 / 3) / 2)
    # sum p (1 - p) = 0.5; / (n - 1) = 1/6; sqrt / P
    assert sampling_standard_error(p, 4) == pytest.approx(math.sqrt(1 / 6) / 4)
    assert standard_error([0.3]) == 0.0
    assert sampling_standard_error([0.0, 1.0], 1) is None
    assert sampling_standard_error([0.0, 1.0, 1.0], 8) == 0.0
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        sampling_standard_error([1.5], 4)
    records = [record([1, 1, 1, 1], [1] * 4), record([1, 0, 1, 0], [1] * 4), record([0] * 4, [1] * 4),
               record([0, 1, 0, 1], [1] * 4)]  # fmt: skip
    m = summarize(records)
    assert m["pass@1_se"] == pytest.approx(math.sqrt(0.5 / 3) / 2)
    assert m["pass@1_sampling_se"] == pytest.approx(math.sqrt(1 / 6) / 4)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_sampling_variance_is_unbiased(n):
    """E[p (1 - p) / (n - 1)] over c ~ Binomial(n, q) is exactly q (1 - q) / n, the variance of the mean."""
    for q in (Fraction(1, 10), Fraction(1, 2), Fraction(7, 9)):
        expected = sum(
            math.comb(n, c) * q**c * (1 - q) ** (n - c) * Fraction(c, n) * (1 - Fraction(c, n)) / (n - 1)
            for c in range(n + 1)
        )
        assert expected == q * (1 - q) / n
        assert sampling_standard_error([0.25], n) ** 2 == pytest.approx(0.25 * 0.75 / (n - 1))


def test_summarize_with_one_sample_or_one_problem():
    one_sample = summarize([record([1], [5]), record([0], [7])])
    assert one_sample["pass@1_sampling_se"] is None and one_sample["pass@1_se"] == pytest.approx(0.5)
    one_problem = summarize([record([1, 0], [5, 7])])
    assert one_problem["pass@1_se"] == 0.0 and one_problem["pass@1_sampling_se"] == pytest.approx(0.5)


def test_overall_combines_standard_errors_as_independent():
    a = summarize([record([1, 0], [1, 1]), record([1, 1], [1, 1]), record([0, 0], [1, 1])])
    b = summarize([record([1, 0], [1, 1]), record([0, 0], [1, 1])])
    o = overall({"a": a, "b": b})
    assert o["pass@1_se"] == pytest.approx(math.sqrt(a["pass@1_se"] ** 2 + b["pass@1_se"] ** 2) / 2)
    assert o["pass@1_sampling_se"] == pytest.approx(
        math.sqrt(a["pass@1_sampling_se"] ** 2 + b["pass@1_sampling_se"] ** 2) / 2
    )
    greedy = summarize([record([1], [1]), record([0], [1])])
    assert overall({"a": a, "greedy": greedy})["pass@1_sampling_se"] is None
    old = {key: v for key, v in a.items() if key not in ("pass@1_se", "pass@1_sampling_se")}  # older results.json
    assert overall({"old": old})["pass@1_se"] is None


# --------------------------------------------------------------------------------------------- paired comparison


def test_paired_difference_by_hand():
    a = {0: 0.5, 1: 0.25, 2: 1.0}
    b = {2: 0.5, 0: 0.75, 1: 0.25}  # order does not matter
    d = [0.25, 0.0, -0.5]
    r = paired_difference(a, b)
    se = statistics.stdev(d) / math.sqrt(3)
    assert r["difference"] == pytest.approx(-0.25 / 3)
    assert r["se"] == pytest.approx(se)
    assert r["ci95"] == pytest.approx([-0.25 / 3 - 1.959963984540054 * se, -0.25 / 3 + 1.959963984540054 * se])
    assert r["mean_a"] == pytest.approx(1.75 / 3) and r["mean_b"] == pytest.approx(0.5)
    assert r["num_problems"] == 3 and r["dropped"] == 0
    assert paired_difference({0: 0.5}, {0: 1.0})["se"] == 0.0


def test_paired_difference_refuses_different_problem_sets_unless_asked():
    a = {0: 0.5, 1: 0.25, 2: 1.0}
    b = {0: 0.75, 1: 0.25, 3: 0.0}
    with pytest.raises(ValueError, match=r"only in a: 1 \(2\); only in b: 1 \(3\)"):
        paired_difference(a, b)
    r = paired_difference(a, b, intersect=True)
    assert r["num_problems"] == 2 and r["dropped"] == 2 and r["difference"] == pytest.approx(0.125)
    with pytest.raises(ValueError, match="share no problem"):
        paired_difference({0: 1.0}, {1: 1.0}, intersect=True)


def test_paired_difference_from_records():
    base = [dict(record([1, 0], [1, 1]), index=i) for i in range(3)]
    better = [dict(record([1, 1], [1, 1]), index=i) for i in (2, 0, 1)]
    assert per_problem_means(base) == {0: 0.5, 1: 0.5, 2: 0.5}
    r = paired_difference(per_problem_means(base), per_problem_means(better))
    assert r["difference"] == pytest.approx(0.5) and r["se"] == 0.0
    with pytest.raises(ValueError, match="appears twice"):
        per_problem_means(base + base)


# --------------------------------------------------------------------------------------------- unbiased maj@k

HALF = {"0.5": "1/2", "\\frac12": "1/2", "\\frac{1}{2}": "1/2", "1/2": "1/2"}


def canon(answer):
    return HALF.get(answer, answer)


def same_value(x, y):
    return canon(x) == canon(y)


def brute_force_maj(extracted, gold, k, same):
    """Mean over every k-subset of the vote's expected correctness, grouping the subset's answers with `same`."""
    total, subsets = Fraction(0), 0
    for subset in itertools.combinations(range(len(extracted)), k):
        subsets += 1
        answers = [extracted[i] for i in subset if normalize_vote(extracted[i]) is not None]
        groups: list[list[str]] = []
        for x in answers:
            for g in groups:
                if same(g[0], x):
                    g.append(x)
                    break
            else:
                groups.append([x])
        if not groups:
            continue
        top = max(len(g) for g in groups)
        tied = [g for g in groups if len(g) == top]
        total += Fraction(sum(same(g[0], gold) for g in tied), len(tied))
    return total / subsets


def default_same(x, y):
    return normalize_vote(x) == normalize_vote(y)


MAJ_CASES = [
    # equivalent spellings, ties, no-answer samples
    (["0.5", "\\frac12", "3", "3", None, "7", "\\frac{1}{2}", "7", None, "3"], "1/2"),
    (["3", None, None, "3", "0.5", "0.5", "\\frac12", "4", "4", "4"], "0.5"),
    ([None, None, None], "1"),
    (["1", None, "2", None], "1"),
    (["5", "7", "7", "5", "5"], "5"),
    (["a", "b", "c", "d", "e", "f", "g", "h"], "c"),
]


@pytest.mark.parametrize("extracted, gold", MAJ_CASES)
@pytest.mark.parametrize("same", [same_value, None])
def test_maj_at_k_equals_brute_force_enumeration(extracted, gold, same):
    test_same = same or default_same
    correct = [float(x is not None and test_same(x, gold)) for x in extracted]
    classes, unanswered = answer_classes(extracted, correct, same)
    n = len(extracted)
    got = maj_at_k(classes, unanswered, range(1, n + 1), method="exact")
    for k in range(1, n + 1):
        assert abs(Fraction(got[k]) - brute_force_maj(extracted, gold, k, test_same)) < Fraction(1, 10**12), k


def test_maj_at_k_equals_brute_force_on_random_problems():
    rng = random.Random(11)
    for _ in range(40):
        n = rng.randint(1, 9)
        pool = ["0.5", "\\frac12", "2", "3", "4", None, " "][: rng.randint(2, 7)]
        extracted = [rng.choice(pool) for _ in range(n)]
        gold = rng.choice(["1/2", "2", "9"])
        correct = [float(x is not None and same_value(x, gold)) for x in extracted]
        classes, unanswered = answer_classes(extracted, correct, same_value)
        got = maj_at_k(classes, unanswered, range(1, n + 1))
        for k in range(1, n + 1):
            want = brute_force_maj(extracted, gold, k, same_value)
            assert abs(Fraction(got[k]) - want) < Fraction(1, 10**12), (extracted, gold, k)


def test_maj_at_k_by_hand():
    classes, unanswered = answer_classes(["5", "7", "7", "5", "5"], [1, 0, 0, 1, 1])
    assert (classes, unanswered) == ([(3, True), (2, False)], 0)
    # k=2: 3 pairs "55" win, 1 pair "77" loses, 6 mixed pairs tie (1/2); k=3: "555" and the 6 "557" win
    assert maj_at_k(classes, unanswered, [1, 2, 3, 5]) == pytest.approx({1: 0.6, 2: 0.6, 3: 0.7, 5: 1.0})
    # no answer does not vote; a subset without any answer scores 0
    classes, unanswered = answer_classes([None, None, "3"], [0, 0, 1])
    assert maj_at_k(classes, unanswered, [1, 2, 3]) == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
    assert maj_at_k(*answer_classes([None, None], [0, 0]), [1, 2]) == {1: 0.0, 2: 0.0}
    assert maj_at_k(*answer_classes(["1", "2"], [0, 0]), [2]) == {2: 0.0}


def test_answer_classes_groups_with_the_equivalence_once_per_answer():
    extracted = ["0.5", "\\frac12", None, "3", " ", "\\frac{1}{2}", "3"]
    correct = [1, 1, 0, 0, 0, 1, 0]
    assert answer_classes(extracted, correct, same_value) == ([(3, True), (2, False)], 2)
    # default: normalised strings, so the three spellings of 1/2 vote apart
    assert answer_classes(extracted, correct) == ([(1, True), (1, True), (2, False), (1, True)], 2)
    assert answer_classes(["\\frac{1}{2}", "\\dfrac{1}{2}"], [1, 1]) == ([(2, True)], 0)
    calls = []

    def counting(x, y):
        calls.append((x, y))
        return same_value(x, y)

    answer_classes(["a", "b", "c", "a", "b", "c"] * 5, [0] * 30, counting)
    assert len(calls) <= 30 * 3
    # a class is correct when any of its samples was graded correct
    assert answer_classes(["4", "4"], [0, 1]) == ([(2, True)], 0)
    with pytest.raises(ValueError, match="2 extracted answers but 1 scores"):
        answer_classes(["1", "2"], [1])


def test_maj_at_k_sampling_agrees_with_the_exact_value_and_is_seeded():
    extracted = ["1"] * 9 + ["2"] * 8 + ["3"] * 8 + [None] * 5 + [str(i) for i in range(10, 20)]
    correct = [1.0] * 9 + [0.0] * 31
    classes, unanswered = answer_classes(extracted, correct)
    ks = [1, 2, 4, 8, 16, 32, 40]
    exact = maj_at_k(classes, unanswered, ks, method="exact")
    sampled = maj_at_k(classes, unanswered, ks, method="sample", permutations=4000, seed=5)
    for k in ks:  # standard error <= 0.5 / sqrt(4000) ~ 0.008
        assert sampled[k] == pytest.approx(exact[k], abs=0.035), k
    assert sampled == maj_at_k(classes, unanswered, ks, method="sample", permutations=4000, seed=5)
    assert exact[40] == 1.0  # all 40 samples: "1" wins 9 to 8


def test_maj_at_k_large_n():
    # n = 1024 with a dominant right class: exact (the leader's levels above the runner-up are closed form)
    classes = [(700, True), (200, False)] + [(3, False)] * 30 + [(1, False)] * 24
    assert maj_at_k_is_exact(classes, 10, 1024)
    ks = default_ks(1024)
    exact = maj_at_k(classes, 10, ks)
    sampled = maj_at_k(classes, 10, ks, method="sample", permutations=1000, seed=1)
    assert all(sampled[k] == pytest.approx(exact[k], abs=0.05) for k in ks)
    assert exact[1] == pytest.approx(700 / 1024) and exact[1024] == 1.0
    # many large classes at n = 1024: the exact programme would be too slow, so auto samples (seeded)
    crowded = [(16, True)] + [(10, False)] * 100
    assert not maj_at_k_is_exact(crowded, 8, 1024)
    auto = maj_at_k(crowded, 8, [1, 1024], permutations=50, seed=0)
    assert auto[1] == pytest.approx(16 / 1024, abs=0.03) and auto[1024] == 1.0


def test_summarize_maj_at_k_uses_the_answer_equivalence():
    extracted = ["0.5", "\\frac12", "3", "3"]
    records = [dict(record([1, 1, 0, 0], [5] * 4, extracted=extracted), index=0)]
    plain = summarize(records)  # three classes: "0.5" (1), "\frac12" (1), "3" (2)
    together = summarize(records, same=same_value)  # two classes of 2
    # k=4: "3" wins 2-1-1 / a 2-2 tie scores 1/2
    assert plain["maj@k"]["4"] == pytest.approx(0.0) and together["maj@k"]["4"] == pytest.approx(0.5)
    assert together["maj@k"]["1"] == pytest.approx(0.5) == plain["maj@k"]["1"]
    assert mean_maj_at_k(records, [1, 2, 4], same=same_value) == pytest.approx({1: 0.5, 2: 0.5, 4: 0.5})
    assert together["parallel_thinking"][-1]["maj@k"] == together["maj@k"]["4"]


def test_expected_max_equals_enumeration():
    values = [7, 1, 7, 3, 10, 2]
    for k in range(1, 7):
        subsets = list(itertools.combinations(values, k))
        assert expected_max(values, k) == pytest.approx(sum(max(s) for s in subsets) / len(subsets))
    assert expected_max([4.0], 1) == 4.0


# --------------------------------------------------------------------------------------------- budget curve


def test_budget_curve_by_hand():
    records = [record([1, 1, 0, 0], [100, 300, 50, 1000]), record([1, 0, 1, 1], [600, 20, 256, 257])]
    c = budget_curve(records, [50, 256, 300, 1000])
    assert c["budgets"] == [50, 256, 300, 1000]
    # 50: the only sample that short is wrong; 256: 100 and 256; 300: + 300 and 257; 1000: + 600
    assert c["accuracy"] == pytest.approx([0.0, 0.25, 0.5, 0.625])
    assert c["accuracy_se"] == pytest.approx([0.0, 0.0, 0.0, statistics.stdev([0.5, 0.75]) / math.sqrt(2)])
    assert budget_curve(records)["budgets"] == [256, 512, 1000]
    with pytest.raises(ValueError, match="budgets must be integers"):
        budget_curve(records, [-1])


def test_default_budgets():
    assert default_budgets(100) == [100]
    assert default_budgets(256) == [256]
    assert default_budgets(1024) == [256, 512, 1024]
    assert default_budgets(1025) == [256, 512, 1024, 1025]


# --------------------------------------------------------------------------------------------- length histogram


def test_length_histogram_by_hand():
    records = [
        record([0] * 6, [0, 0, 30, 30, 100, 100]),  # hard: 0 of 6
        record([1, 1, 1, 0, 0, 0], [10, 20, 30, 60, 70, 80]),  # medium: 3 of 6
        record([1, 1, 1, 1, 1, 0], [5, 5, 55, 55, 99, 100]),  # easy: 5 of 6
    ]
    h = length_histogram(records, bins=4)
    assert h["edges"] == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert h["correct"] == [4, 1, 2, 1]
    assert h["incorrect"] == [2, 2, 2, 4]  # the last bin holds its right edge (100)
    assert h["hard"] == {"problems": 1, "correct": [0, 0, 0, 0], "incorrect": [2, 2, 0, 2]}
    assert h["medium"] == {"problems": 1, "correct": [2, 1, 0, 0], "incorrect": [0, 0, 2, 1]}
    assert h["easy"] == {"problems": 1, "correct": [2, 0, 2, 1], "incorrect": [0, 0, 0, 1]}


def test_length_histogram_difficulty_boundaries():
    # n = 3: 1 of 3 is hard (<= 1/3), 2 of 3 is easy (>= 2/3); n = 6: 2 hard, 3 medium, 4 easy
    h = length_histogram([record([1, 0, 0], [1, 2, 3]), record([1, 1, 0], [1, 2, 3])], bins=2)
    assert (h["hard"]["problems"], h["medium"]["problems"], h["easy"]["problems"]) == (1, 0, 1)
    six = [record([1] * c + [0] * (6 - c), [1] * 6) for c in (2, 3, 4)]
    h = length_histogram(six, bins=1)
    assert (h["hard"]["problems"], h["medium"]["problems"], h["easy"]["problems"]) == (1, 1, 1)
    assert h["edges"] == [0.5, 1.5] and h["correct"] == [9] and h["incorrect"] == [9]
    with pytest.raises(ValueError, match="bins must be"):
        length_histogram(six, bins=0)


# --------------------------------------------------------------------------------------------- per-problem rows


def test_per_problem_rows_by_hand():
    records = [
        {"benchmark": "aime24", "index": 7, "correct": [1.0, 0.0, 1.0, 0.0], "tokens": [10, 20, 30, 40],
         "truncated": [False, False, False, True], "extracted": ["1", None, "1", "2"]},
        {"benchmark": "aime24", "index": 3, "correct": [0.0, 0.0], "tokens": [5, 7], "truncated": [True, True],
         "extracted": [None, None]},
    ]  # fmt: skip
    rows = per_problem_rows(records)
    assert [tuple(r) for r in rows] == [PER_PROBLEM_COLUMNS] * 2
    assert PER_PROBLEM_COLUMNS == ("benchmark", "index", "samples", "correct", "mean_correct", "mean_length",
                                   "truncated")  # fmt: skip
    assert rows[0] == {"benchmark": "aime24", "index": 7, "samples": 4, "correct": 2, "mean_correct": 0.5,
                       "mean_length": 25.0, "truncated": 1}  # fmt: skip
    assert rows[1] == {"benchmark": "aime24", "index": 3, "samples": 2, "correct": 0, "mean_correct": 0.0,
                       "mean_length": 6.0, "truncated": 2}  # fmt: skip
