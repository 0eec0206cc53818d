"""The released grader (`MathReward(grader="released")`): DLER's released reward, run in dler's grading pool.

Where it looks (between the first and second `</think>`, the last literal `\\boxed{}`), its string normaliser, each
of its three acceptance paths (math-verify, normalised strings, sympy), and the pool path against the function.
"""

import logging

import pytest

from dler.rewards import GRADERS, GradingPool, MathReward, grading, math_correctness, released
from dler.rewards import extract as ex
from dler.rewards import prechecks as pc


def r1(answer: str) -> str:
    return f"<think>\nLet me see. Maybe \\boxed{{99}}.\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."


# ------------------------------------------------------------------------------------------ where the answer is

REGION_CASES = [
    # (response, released answer, reason)
    (r1("7"), "7", "ok"),
    ("<think>a</think> \\boxed{1} </think> \\boxed{2}", "1", "ok"),  # after a second </think>: ignored
    ("<think>a</think> no box here </think> \\boxed{2}", None, ex.NO_BOX),
    ("no thinking at all \\boxed{5}", None, ex.NO_THINK_END),
    ("<think>\\boxed{5}</think>", None, ex.NO_BOX),
    ("<think></think>\\fbox{12}", None, ex.NO_BOX),  # a literal \boxed{ is required
    ("<think></think>\\boxed{3} and \\fbox{4}", "3", "ok"),  # \fbox is not a box here
    ("<think></think>\\boxed{3} then \\boxed 5", None, ex.NO_BOX),  # the last box has no brace
    ("<think></think>first \\boxed{3}, then \\boxed{7}", "7", "ok"),
    ("<think></think>\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "ok"),
    ("<think></think>\\boxed{\u221212}", "\u221212", "ok"),  # no unicode mapping: the released grader has none
    ("<think></think>\\boxed{\x007\u200b}", "7", "ok"),  # control characters are still dropped
    ("<think></think>\\boxed{5^{5^{5^5}}}", None, pc.HUGE_POWER),  # dler's pre-checks stay
]


@pytest.mark.parametrize("text,answer,reason", REGION_CASES)
def test_released_extraction(text, answer, reason):
    assert released.extract_answer(text) == (answer, reason)


def test_answer_region_is_between_the_first_and_second_tag():
    assert released.answer_region("a</think>b</think>c") == "b"
    assert released.answer_region("a</think>b") == "b"
    assert released.answer_region("no tag") is None
    assert released.answer_region("no tag", require_think_end=False) == "no tag"
    assert released.answer_region("x", think_end=None) == "x"


# ------------------------------------------------------------------------------------------ string normaliser

NORMALIZE_CASES = [
    ("\\left( 1, 2 \\right)", "(1,2)"),  # \left, \right, spaces
    ("1,\\!000", "1,000"),  # \!
    ("45^\\circ", "45"),
    ("45^{\\circ}", "45"),
    ("\\$5.00", "5.00"),
    ("10\\%", "10"),
    ("5\\text{ cm}", "5"),  # a unit after something
    ("5 \\mbox{ cm}^2", "5"),
    ("\\text{(C)}", "(C)"),  # a whole \text{} is unwrapped, not dropped
    ("\\dfrac{3}{4}", "\\frac{3}{4}"),
    ("\\tfrac{3}{4}", "\\frac{3}{4}"),
    ("\\frac12", "\\frac{1}{2}"),
    ("\\frac1{12}", "\\frac{1}{12}"),
    ("\\frac{12}5", "\\frac{12}{5}"),
    ("\\sqrt3", "\\sqrt{3}"),
    (".25", "0.25"),
    ("-.25", "-0.25"),
    ("3/4", "\\frac{3}{4}"),
    ("x/4", "x/4"),  # integers only
    ("x = 3", "3"),
    ("k=\\frac{1}{2}", "\\frac{1}{2}"),
    ("abc = 3", "abc=3"),  # the lhs is kept when longer than 2 characters
    ("1 = x = 3", "1=x=3"),  # and when there are several `=`
    ("12.", "12"),
    ("0.5", "\\frac{1}{2}"),
    ("2\\pi x", "2\\pi x"),  # a command's space before a letter means something
    ("\\text{Monday}.", "Monday"),
]


@pytest.mark.parametrize("raw,normal", NORMALIZE_CASES)
def test_normalize(raw, normal):
    assert released.normalize(raw) == normal


def test_string_check_needs_something_left():
    assert released.string_equal("\\frac12", "0.5")
    assert not released.string_equal("\\$", "\\%")  # both normalise to ""
    assert not released.string_equal("3", "4")


# ------------------------------------------------------------------------------------------ the three paths

# (gold, answer): exactly one of the three checks accepts each; the last pair none does
STRING_ONLY = ("(1,2)", "\\left(1,2\\right).")  # math-verify fails on the trailing period, sympy on tuples
MATH_VERIFY_ONLY = ("x \\in (1,2)", "(1,2)")  # a membership against an interval: neither string nor sympy
SYMPY_ONLY = ("\\$18.90", "18.9")  # a literal $ defeats math-verify's $...$ parsing; 18.90 - 18.9 == 0
WRONG = ("3", "4")


def paths(gold, answer):
    string = released.string_equal(gold, answer)
    mv = grading.released_math_verify(gold, answer, 5)[0]
    sy = grading.sympy_equal(released.normalize(gold), released.normalize(answer), 5)[0]
    return string, mv, sy


@pytest.mark.parametrize(
    "pair,expected,path",
    [
        (STRING_ONLY, (True, False, False), "string"),
        (MATH_VERIFY_ONLY, (False, True, False), "math_verify"),
        (SYMPY_ONLY, (False, False, True), "sympy"),
    ],
)
def test_each_path_accepts_what_only_it_accepts(pair, expected, path):
    assert paths(*pair) == expected
    assert grading.grade_released(*pair) == (1.0, "correct", path)


def test_a_wrong_answer_is_rejected_by_all_three():
    assert paths(*WRONG) == (False, False, False)
    assert grading.grade_released(*WRONG) == (0.0, "wrong", "")
    assert grading.grade_released("\\frac{x^2+3x+2}{x+1}", "x+3")[:2] == (0.0, "wrong")  # sympy simplifies


def test_sympy_path_is_bounded():
    assert grading.sympy_equal("", "1", 5) == (False, "unparsed")
    assert grading.sympy_equal("5^{5^{5^5}}", "1", 5) == (False, "unparsed")  # pre-checked, never parsed
    assert grading.sympy_equal("\\{1,2\\}", "\\{2,1\\}", 5) == (False, "wrong")  # expressions only


def test_released_gold_check():
    assert grading.check_gold_released("\\frac{1}{2}") == (1.0, "correct", "")
    # the string check accepts any non-empty gold against itself, so a gold math-verify cannot read still counts
    assert grading.check_gold_released("#") == (1.0, "correct", "")
    assert grading.check_gold("#")[1] == "invalid_gold"


# ------------------------------------------------------------------------------------------ through the pool

BATCH = [
    # (completion, gold, released score, dler score)
    (r1("7"), "7", 1.0, 1.0),
    ("<think>a</think> \\boxed{1} </think> \\boxed{2}", "2", 0.0, 1.0),  # released ignores text after </think> #2
    ("<think>a</think> \\boxed{1} </think> \\boxed{2}", "1", 1.0, 0.0),
    ("no think \\boxed{5}", "5", 0.0, 0.0),
    ("<think></think>\\fbox{12}", "12", 0.0, 1.0),  # \fbox: only the dler grader reads it
    (r1(STRING_ONLY[1]), STRING_ONLY[0], 1.0, 1.0),
    (r1(MATH_VERIFY_ONLY[1]), MATH_VERIFY_ONLY[0], 1.0, 1.0),
    (r1(SYMPY_ONLY[1]), SYMPY_ONLY[0], 1.0, 1.0),
    (r1("5\\text{ cm}"), "5\\text{ m}", 1.0, 0.0),  # released drops units; dler compares them
    (r1(WRONG[1]), WRONG[0], 0.0, 0.0),
]


@pytest.fixture(scope="module")
def pool():
    with GradingPool(num_workers=1, answer_timeout=5.0, batch_timeout=60.0) as p:
        p.start(wait_ready=True)
        yield p


def test_pool_and_function_agree(pool):
    completions = [c for c, _, _, _ in BATCH]
    golds = [g for _, g, _, _ in BATCH]
    expected = [r for _, _, r, _ in BATCH]
    in_process = math_correctness(completions, golds, grader="released", num_workers=0)
    assert in_process == expected
    with MathReward(pool=pool, grader="released") as reward:
        metrics = {}
        scores = reward(completions=completions, answer=golds, log_metric=metrics.__setitem__)
        assert scores == expected
        assert reward.stats["correct"] == sum(expected) and reward.stats["no_think_end"] == 1
        assert metrics["math/graded"] == pytest.approx(8 / 10) and metrics["math/unparseable"] == pytest.approx(2 / 10)
        jobs = pool.stats["jobs"]
        assert reward.score(completions, golds) == expected
        assert pool.stats["jobs"] == jobs  # cached
    # the same pool grades the same pairs differently under the dler grader: a job kind of its own
    with MathReward(pool=pool) as dler:
        assert dler.score(completions, golds) == [d for _, _, _, d in BATCH]


def test_pool_job_kinds(pool):
    assert pool.run("grade_released", [SYMPY_ONLY, WRONG]) == [(1.0, "correct", "sympy"), (0.0, "wrong", "")]
    assert pool.run("gold_released", [("#", "")]) == [(1.0, "correct", "")]
    assert pool.run("gold", [("#", "")])[0][1] == "invalid_gold"


def test_released_gold_preparation(pool, caplog):
    caplog.set_level(logging.WARNING)
    with MathReward(pool=pool, grader="released") as reward:
        assert reward.check_answers(["#", "", 142.0]) == [(True, "ok"), (False, "empty"), (True, "ok")]


# ------------------------------------------------------------------------------------------ the setting


def test_invalid_grader_names_the_field_and_the_choices():
    assert GRADERS == ("dler", "released")
    with pytest.raises(ValueError, match="grader must be one of 'dler', 'released'; got 'verl'"):
        MathReward(grader="verl")
    with pytest.raises(ValueError, match="grader must be one of 'dler', 'released'; got 'verl'"):
        math_correctness([r1("1")], ["1"], grader="verl", num_workers=0)


def test_describe_names_the_grader():
    assert MathReward(num_workers=0).describe()["grader"] == "dler"
    d = MathReward(num_workers=0, grader="released").describe()
    assert d["grader"] == "released" and "released" in d["description"] and d["think_end"] == "</think>"
