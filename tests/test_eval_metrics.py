"""dler.eval.metrics: pass@k against the exact combinatorial formula, maj@k, and the metrics of graded records."""

import math
import random
from fractions import Fraction

import pytest

from dler.eval.metrics import (
    length_cut,
    majority_vote,
    mean_pass_at_k,
    normalize_vote,
    overall,
    pass_at_k,
    powers_of_two,
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
    # maj@1: first answers "right" / "wrong"; maj@2: "right" x2 wins; maj@4: a 2-2 tie goes to "right" (first)
    assert m["maj@k"] == {"1": 0.5, "2": 0.5, "4": 0.5}
    assert m["solved_any"] == 0.5 and m["solved_all"] == 0.0
    p = {x["k"]: x for x in m["parallel_thinking"]}
    assert p[4]["total_tokens"] == pytest.approx(4 * 3900 / 8)
    assert p[2]["latency_tokens"] == pytest.approx((200 + 400) / 2)
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
