"""Math rewards: answer extraction, pre-checks and gold handling (pure functions), then grading through the pool.

Pool mechanics (deadlines, crashes, shutdown, torchrun) are in test_rewards_pool.py.
"""

import logging
import pickle
import time

import pytest

from dler.rewards import (
    GradingPool,
    MathReward,
    completion_text,
    extract_answer,
    forms,
    last_boxed,
    math_correctness,
    normalize_gold,
    precheck,
    prepare_gold_answers,
)
from dler.rewards import extract as ex
from dler.rewards import prechecks as pc
from dler.rewards.status import CATEGORIES, category


def r1(answer: str, thinking: str = "Let me compute. $x^2 = 4$ so maybe \\boxed{99}.") -> str:
    """An R1-style response: thinking (with a decoy box), `</think>`, then a final boxed answer."""
    return f"<think>\n{thinking}\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."


# ------------------------------------------------------------------------------------------ extraction (pure)

EXTRACT_CASES = [
    # (response, expected answer, expected reason)
    (r1("7"), "7", "ok"),
    ("<think>a</think> first \\boxed{3}, then correcting myself \\boxed{7}", "7", "ok"),
    ("<think>\\boxed{5}</think> no box after the thinking", None, ex.NO_BOX),
    ("<think>never closed \\boxed{5}", None, ex.NO_THINK_END),
    ("no thinking at all \\boxed{5}", None, ex.NO_THINK_END),
    ("<think></think>\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", "ok"),
    ("<think></think>\\boxed{\\{1, 2\\}}", "\\{1, 2\\}", "ok"),  # escaped braces do not close the box
    ("<think></think>\\fbox{12}", "12", "ok"),
    ("<think></think>\\boxed{1} and \\fbox{2}", "2", "ok"),
    ("<think></think>\\boxed 5.", "5", "ok"),
    ("<think></think>\\boxed{}", None, ex.EMPTY),
    ("<think></think>\\boxed{2} then \\boxed{3", None, ex.UNCLOSED_BOX),  # truncated: the last box never closes
    ("<think></think>\\boxedfoo{1}", None, ex.NO_BOX),
    ("<think>a</think> \\boxed{1} </think> \\boxed{2}", "2", "ok"),  # after the first </think>, last box
    ("<think></think>\\boxed{$-3$}", "-3", "ok"),
    ("<think></think>\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", None, pc.TOO_DEEP),
    ("<think></think>\\boxed{" + "1+" * 50_000 + "1}", None, pc.TOO_LONG),
    ("<think></think>\\boxed{5^{5^{5^5}}}", None, pc.HUGE_POWER),
    ("<think></think>\\boxed{\x00 7 \u200b\ufeff}", "7", "ok"),
]


@pytest.mark.parametrize("text,answer,reason", EXTRACT_CASES)
def test_extract_answer(text, answer, reason):
    assert extract_answer(text) == (answer, reason)


def test_think_end_is_configurable():
    text = "<reasoning>x</reasoning> \\boxed{4}"
    assert extract_answer(text) == (None, ex.NO_THINK_END)
    assert extract_answer(text, think_end="</reasoning>") == ("4", "ok")
    assert extract_answer("plain \\boxed{4}", require_think_end=False) == ("4", "ok")
    assert extract_answer("<think>a</think> \\boxed{4}", require_think_end=False) == ("4", "ok")
    assert extract_answer("<think>\\boxed{1}</think> none", require_think_end=False) == (None, ex.NO_BOX)
    assert extract_answer("plain \\boxed{4}", think_end=None) == ("4", "ok")


def test_last_boxed_is_bounded():
    assert last_boxed("\\boxed{" + "x" * 2000 + "}", max_chars=1000) == (None, pc.TOO_LONG)
    assert last_boxed("\\boxed{" + "x" * 999 + "}", max_chars=1000) == ("x" * 999, "ok")
    assert last_boxed("\\boxed{{{1}}}", max_depth=2) == (None, pc.TOO_DEEP)
    assert last_boxed("\\boxed{a\\}b}") == ("a\\}b", "ok")
    # a million characters of garbage around the box costs well under a millisecond per kB
    text = "<think>" + "\x00{\\" * 300_000 + "</think>" + "}{" * 200_000 + "\\boxed{" + "{" * 100_000
    t = time.perf_counter()
    assert extract_answer(text)[0] is None
    assert time.perf_counter() - t < 0.2


def test_completion_text_formats():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "a</think>\\boxed{1}"}]) == "a</think>\\boxed{1}"
    # a chat-template parser that split the thinking off: the answer still follows a closed thinking block
    parsed = [{"role": "assistant", "reasoning_content": "think", "content": "\\boxed{2}"}]
    assert extract_answer(completion_text(parsed)) == ("2", "ok")
    parts = [
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "x</think>"}, {"type": "text", "text": "\\boxed{3}"}],
        }
    ]
    assert extract_answer(completion_text(parts)) == ("3", "ok")
    with_tool = [{"role": "tool", "content": "</think>\\boxed{9}"}, {"role": "assistant", "content": "no answer"}]
    assert extract_answer(completion_text(with_tool)) == (None, ex.NO_THINK_END)


def test_clean_text():
    assert ex.clean_text("a\x00b\x07c\u200bd\ufeff\u202e") == "abcd"
    assert ex.clean_text("\ud800x") == "x"  # lone surrogate
    assert ex.clean_text("\uff17") == "7"  # full-width digit
    assert ex.clean_answer("\u2212\u00bd") == "-\\frac{1}{2}"
    assert ex.clean_answer("2\u03c0") == "2\\pi"
    assert ex.clean_answer("$\\$12$") == "12"


PRECHECK_CASES = [
    ("2^{10}", "ok"),
    ("2^{2023}", "ok"),
    ("e^{x^2}", "ok"),
    ("5^{5^5}", "ok"),  # 5^3125: 2185 digits, cheap
    ("x^{x^{x^{x}}}", "ok"),
    ("10!", "ok"),
    ("(3!)!", "ok"),
    ("\\binom{10}{3}", "ok"),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "ok"),
    ("\\left(\\frac{\\sqrt{3}}{2}, -\\frac{1}{2}\\right)", "ok"),
    ("5^{5^{5^5}}", pc.HUGE_POWER),
    ("10^{10^{10}}", pc.HUGE_POWER),
    ("10^{-10^{10}}", pc.HUGE_POWER),
    ("2^{99999999}", pc.HUGE_POWER),
    ("9**9**9", pc.HUGE_POWER),
    ("x^{x^{x^{x^{x}}}}", pc.HUGE_POWER),
    ("100000!", pc.HUGE_FACTORIAL),
    ("(10^{10})!", pc.HUGE_FACTORIAL),
    ("(9!)!", pc.HUGE_FACTORIAL),
    ("\\binom{100000}{50000}", pc.HUGE_FACTORIAL),
    ("(" * 13 + "1" + ")" * 13, pc.TOO_DEEP),
    ("x" * 1001, pc.TOO_LONG),
]


@pytest.mark.parametrize("answer,reason", PRECHECK_CASES)
def test_precheck(answer, reason):
    assert precheck(answer) == reason


@pytest.mark.parametrize(
    "answer",
    ["2^" * 499 + "2", "2**" * 333, "!" * 1000, "(1)!" * 250, "2^{2}" * 200, "(2^{3})!" * 125, "{" * 1000, "9" * 1000],
)
def test_precheck_is_cheap_on_hostile_answers(answer):
    t = time.perf_counter()
    precheck(answer[:1000])
    assert time.perf_counter() - t < 0.02


def test_numeric_log10():
    assert pc.numeric_log10("1000") == pytest.approx(3)
    assert pc.numeric_log10("{2^{10}}") == pytest.approx(10 * 0.30103, rel=1e-4)
    assert pc.numeric_log10("5^{5^{5^5}}") == float("inf")
    assert pc.numeric_log10("1^{10^{100}}") == 0.0
    assert pc.numeric_log10("x^2") is None
    assert pc.numeric_log10("\\pi") is None


GOLD_CASES = [
    ("142.0", "142.0"),
    (142.0, "142"),  # AMC float golds
    (7, "7"),
    (-0.5, "-0.5"),
    (1e-05, "0.00001"),  # never scientific notation: latex2sympy reads 1e-05 as e - 5
    (float("inf"), "\\infty"),
    ("  \\frac{1}{2} ", "\\frac{1}{2}"),
    ("$\\frac{1}{2}$", "\\frac{1}{2}"),
    ("The answer is \\boxed{(1, 2)}", "(1, 2)"),
    (["12"], "12"),
    (None, None),
    ("", None),
    ("   ", None),
    (float("nan"), None),
    (True, None),
    (["1", "2"], None),
    ("10^{10^{10}}", None),
]


@pytest.mark.parametrize("raw,gold", GOLD_CASES)
def test_normalize_gold(raw, gold):
    assert normalize_gold(raw)[0] == gold


# ------------------------------------------------------------------------------------------ answer forms (pure)

E_NOTATION_CASES = [
    ("4.5e33", "4.5\\times10^{33}"),
    ("1.2e-5", "1.2\\times10^{-5}"),
    ("3e8", "3\\times10^{8}"),
    ("1E+5", "1\\times10^{5}"),
    ("-7.5e-7", "-7.5\\times10^{-7}"),
    ("(1.5e3, 2e4)", "(1.5\\times10^{3}, 2\\times10^{4})"),
    ("e", "e"),  # Euler's number alone
    ("2e", "2e"),  # 2 times e
    ("e^{2}", "e^{2}"),
    ("2e^{3}", "2e^{3}"),
    ("\\exp(3)", "\\exp(3)"),
    ("x2e3", "x2e3"),  # inside a word
    ("2e3x", "2e3x"),
    ("sec2e3", "sec2e3"),
    ("\\text{see3}", "\\text{see3}"),
    ("1e999999", "1e999999"),  # never a million-digit power of ten
]


@pytest.mark.parametrize("raw,expanded", E_NOTATION_CASES)
def test_e_notation(raw, expanded):
    assert forms.expand_e_notation(raw) == expanded


def test_ambiguous_e_notation_is_read_both_ways_in_answers_only():
    assert forms.answer_readings("2e-1") == ["2\\times10^{-1}", "2e-1"]  # 0.2, or 2e - 1
    assert forms.answer_readings("2.0e-1") == ["2.0\\times10^{-1}"]  # a decimal mantissa: only a number
    assert forms.answer_readings("3e8") == ["3\\times10^{8}"]  # an unsigned exponent: only a number
    assert forms.gold_reading("5e-7") == "5\\times10^{-7}"  # golds: e-notation is Minerva's number format


SPLIT_UNIT_CASES = [
    ("5\\text{ cm}", ("5", " cm")),
    ("9.6 \\mathrm{~km}", ("9.6", "~km")),
    ("5 m", ("5", "m")),
    ("5\\,\\mathrm{m}", ("5", "m")),
    ("300 K", ("300", "K")),
    ("3\\,\\mathrm{m}/\\mathrm{s}", ("3", "m / s")),
    ("1.2 \\times 10^{-5} \\mathrm{~m}", ("1.2 \\times 10^{-5}", "~m")),
    ("10^{3}\\mathrm{~cm}^{-3}", ("10^{3}", "~cm^{-3}")),
    ("45^\\circ", ("45", "\\circ")),
    ("5", ("5", None)),
    ("2 x", ("2 x", None)),  # a variable, not a unit
    ("1 A", ("1 A", None)),  # a capital that is more often a variable or a choice than amperes
    ("\\text{(C)}", ("\\text{(C)}", None)),  # nothing before it: not a quantity
    ("3 \\text{ and } 5", ("3 \\text{ and } 5", None)),
    ("5\\text{ (approx.)}", ("5\\text{ (approx.)}", None)),
    ("x = \\text{ cm}", ("x = \\text{ cm}", None)),
]


@pytest.mark.parametrize("raw,split", SPLIT_UNIT_CASES)
def test_split_unit(raw, split):
    assert forms.split_unit(raw) == split


@pytest.mark.parametrize(
    "a,b,same",
    [
        ("~km", "kilometers", True),
        ("m", "\\text{ meters}", True),
        ("m / s", "m \\, s^{-1}", True),
        ("m/s", "meters per second", True),
        ("m^2", "square meters", True),
        ("\\circ", "degrees", True),
        ("\\AA", "Angstroms", True),
        ("\\mu m", "um", True),
        ("cm", "m", False),
        ("mm", "Mm", False),  # symbols keep their case
        ("m/s", "m s", False),
        ("\\circ", "rad", False),
    ],
)
def test_same_unit(a, b, same):
    assert forms.same_unit(a, b) == same


@pytest.mark.parametrize(
    "raw,letter,label",
    [
        ("C", "C", (None, "C")),
        ("(C)", "C", (None, "(C)")),
        ("\\text{(C)}", "C", (None, "\\text{(C)}")),
        ("\\textbf{(C)}", "C", (None, "\\textbf{(C)}")),
        ("(A) 12", None, ("A", "12")),
        ("\\text{(A) } 12", None, ("A", "12")),
        ("\\textbf{(A)} 12", None, ("A", "12")),
        ("\\text{(A) 12}", None, ("A", "12")),
        ("(1, 2)", None, (None, "(1, 2)")),
        ("(A, B)", None, (None, "(A, B)")),  # a pair of points, not a label
        ("F", None, (None, "F")),  # choices run from A to E
    ],
)
def test_choice_labels(raw, letter, label):
    assert forms.choice_letter(raw) == letter
    assert forms.split_choice(raw) == label


def test_tidy_strips_grouping_braces_and_a_full_stop_only():
    assert forms.tidy("{{{12}}}") == "12"
    assert forms.tidy("{12}.") == "12"
    assert forms.tidy("{(1,2)}") == "(1,2)"
    assert forms.tidy("\\{1, 2\\}") == "\\{1, 2\\}"  # escaped braces print: a set
    assert forms.tidy("{1}+{2}") == "{1}+{2}"  # not one group
    assert forms.tidy("1, 2, ..") == "1, 2, .."
    assert forms.tidy("1.5") == "1.5"


def test_unicode_roots_take_their_whole_operand():
    assert ex.clean_text("\u221a12") == "\\sqrt{12}"  # LaTeX's \sqrt12 would be sqrt(1)*2
    assert ex.clean_text("2\u221a3") == "2\\sqrt{3}"
    assert ex.clean_text("\u221a(x+1)") == "\\sqrt{x+1}"
    assert ex.clean_text("\u221a(x\u00b2+1)") == "\\sqrt{x^2+1}"
    assert ex.clean_text("\u221b27") == "\\sqrt[3]{27}"
    assert ex.clean_text("\u221a{12}") == "\\sqrt{12}"


def test_every_status_has_a_metric():
    reasons = {**vars(ex), **vars(pc)}
    statuses = [v for k, v in reasons.items() if k.isupper() and isinstance(v, str) and v != "</think>"]
    assert all(category(s) in CATEGORIES for s in statuses)
    assert category("something new") == "errors"  # nothing disappears from the metrics


# ------------------------------------------------------------------------------------------ grading (pool)


@pytest.fixture(scope="module")
def reward():
    pool = GradingPool(num_workers=2, answer_timeout=5.0, batch_timeout=60.0)
    pool.start(wait_ready=True)
    with MathReward(pool=pool) as r:
        yield r
    pool.close()


EQUIVALENCES = [
    # (gold, final boxed answer, expected reward)
    ("\\frac{1}{2}", "0.5", 1.0),
    ("0.5", "\\frac{1}{2}", 1.0),
    ("\\frac{1}{2}", "\\dfrac{1}{2}", 1.0),
    ("\\frac12", "1/2", 1.0),
    ("\\frac{1}{3}", "0.33", 0.0),
    (142.0, "142", 1.0),
    ("142.0", "142", 1.0),
    (142.0, "143", 0.0),
    ("2\\sqrt{3}", "\\sqrt{12}", 1.0),
    ("2\\sqrt{3}", "3\\sqrt{2}", 0.0),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", 1.0),
    ("\\pi", "\\pi", 1.0),
    ("\\frac{\\pi}{2}", "\\frac{1}{2}\\pi", 1.0),
    ("2\\pi", "\\pi", 0.0),
    ("[1, 2)", "[1,2)", 1.0),
    ("[1, 2)", "(1, 2]", 0.0),
    ("(-\\infty, 3]", "(-\\infty,3]", 1.0),
    ("(-\\infty, 3]", "(-\\infty, 3)", 0.0),
    ("(1, 2, 3)", "(1,2,3)", 1.0),
    ("(1, 2, 3)", "(3, 2, 1)", 0.0),  # tuples: order matters
    ("(3, 1)", "(1, 3)", 0.0),
    ("-3", "-3", 1.0),
    ("-3", "3", 0.0),
    ("-\\frac{1}{2}", "-0.5", 1.0),
    ("1024", "2^{10}", 1.0),
    ("2^{10}", "1024", 1.0),
    ("1024", "2^{11}", 0.0),
    ("\\infty", "\\infty", 1.0),
    ("\\infty", "-\\infty", 0.0),
    ("\\{1, 2\\}", "\\{2, 1\\}", 1.0),
    ("x^2+2x+1", "(x+1)^2", 1.0),
    ("3", "x = 3", 1.0),
    ("\\text{(C)}", "C", 1.0),
    ("C", "\\textbf{(C)}", 1.0),
    ("C", "D", 0.0),
    ("0.5", "\u00bd", 1.0),  # unicode maths
    ("-3", "\u22123", 1.0),
    ("7", "\uff17", 1.0),
    ("\\pi", "\u03c0", 1.0),
]


def test_equivalences(reward):
    golds = [g for g, _, _ in EQUIVALENCES]
    completions = [r1(a) for _, a, _ in EQUIVALENCES]
    grades = reward.grade(completions, golds)
    wrong = [(g, a, e, gr) for (g, a, e), gr in zip(EQUIVALENCES, grades, strict=True) if gr.score != e]
    assert not wrong
    assert {gr.status for gr in grades} <= {"correct", "wrong"}


# Each rule of `dler.rewards.forms` (and the unicode roots of `extract`) with a case that fails without it.
DECISIONS = [
    # e-notation (Minerva golds): a number, not Euler's e
    ("4.5e33", "4.5 \\times 10^{33}", 1.0),
    ("1.2e-5", "1.2\\times10^{-5}", 1.0),
    ("3e8", "3 \\times 10^8", 1.0),
    ("3 \\times 10^{8}", "3e8", 1.0),
    ("4.5e33", "4.6 \\times 10^{33}", 0.0),
    ("0.2", "2e-1", 1.0),  # ambiguous: read as a number ...
    ("2e - 1", "2e-1", 1.0),  # ... or as 2e - 1
    ("2e", "2e", 1.0),
    ("e^{2}", "e^2", 1.0),
    # tiny numbers compare by significant figures (math-verify's 6-decimal rounding calls them all equal)
    ("1.3 \\times 10^{-5}", "0.0000134", 0.0),
    ("1.2e-9", "0.000000005", 0.0),
    ("1.3e-5", "0.000013", 1.0),
    ("\\frac{1}{3}", "0.333333", 1.0),  # ordinary sizes keep math-verify's rounding
    # units
    ("5\\text{ m}", "5\\text{ cm}", 0.0),
    ("5\\text{ m}", "5", 1.0),
    ("5", "5\\text{ m}", 1.0),
    ("5 m", "5\\,\\mathrm{m}", 1.0),
    ("9.6 \\mathrm{~km}", "9.6\\text{ kilometers}", 1.0),
    ("9.6 \\mathrm{~km}", "9.6", 1.0),
    ("9.6 \\mathrm{~km}", "9600 \\text{ m}", 0.0),  # no conversions: the problem names the unit
    ("45^\\circ", "45\\text{ radians}", 0.0),
    ("45^\\circ", "45", 1.0),
    # choice labels
    ("A", "\\text{(A) } 12", 1.0),
    ("B", "\\text{(A) } 12", 0.0),
    ("12", "\\text{(A) } 12", 1.0),
    ("13", "\\text{(A) } 12", 0.0),
    ("\\text{(C)}", "\\textbf{(C)} 7", 1.0),
    # braces, full stops, unicode roots
    ("(1,2)", "{(1,2)}", 1.0),
    ("12", "{{{12}}}", 1.0),
    ("13", "{{{12}}}", 0.0),
    ("12", "12.", 1.0),
    ("2\\sqrt{3}", "\u221a12", 1.0),
    ("\\sqrt{12}", "\u221a12", 1.0),
]


def test_decisions(reward):
    golds = [g for g, _, _ in DECISIONS]
    grades = reward.grade([r1(a) for _, a, _ in DECISIONS], golds)
    wrong = [(g, a, e, gr) for (g, a, e), gr in zip(DECISIONS, grades, strict=True) if gr.score != e]
    assert not wrong
    assert {gr.status for gr in grades} <= {"correct", "wrong"}


def test_last_box_wins_and_gold_comes_first(reward):
    text = "<think>t</think> first \\boxed{3}, then correcting myself \\boxed{7}"
    assert reward.score([text, text], ["7", "3"]) == [1.0, 0.0]
    # verify(gold, prediction) is not symmetric: a set prediction may answer a gold inequality, not the reverse
    assert reward.score([r1("[1, 2]"), r1("1 \\le x \\le 2")], ["1 \\le x \\le 2", "[1, 2]"]) == [1.0, 0.0]


def test_adversarial_answers_in_a_batch_of_good_ones(reward):
    adversarial = [
        "5^{5^{5^5}}",
        "{" * 5000 + "1" + "}" * 5000,
        "1+" * 50_000 + "1",
        "\x00\x00\x00",
        "\ud800\u202e\ufeff",
        "\\frac{1}{0}",
        "10^{10^{10}}",
        "(10^{10})!",
        "x^{x^{x^{x^{x^{x}}}}}",
        "\\sqrt{" * 40 + "2" + "}" * 40,
    ]
    good = [("\\frac{1}{2}", "0.5", 1.0), ("1024", "2^{10}", 1.0), ("(1, 2)", "(2, 1)", 0.0), ("-3", "-3", 1.0)]
    completions, golds, expected = [], [], []
    for i, bad in enumerate(adversarial):
        g, a, e = good[i % len(good)]
        completions += [r1(bad), r1(a)]
        golds += ["5", g]
        expected += [0.0, e]
    t = time.perf_counter()
    grades = reward.grade(completions, golds)
    elapsed = time.perf_counter() - t
    assert [g.score for g in grades] == expected
    assert elapsed < 10.0  # pre-checks reject the hostile ones in microseconds: no deadline is even needed
    assert all(category(g.status) in ("unparseable", "graded") for g in grades), [g.status for g in grades]


def test_trl_call_conversational_and_metrics(reward):
    completions = [
        [{"role": "assistant", "content": r1("12")}],
        [{"role": "assistant", "content": r1("13")}],
        [{"role": "assistant", "content": "<think>cut off"}],
        [{"role": "assistant", "reasoning_content": "thought", "content": "\\boxed{12}"}],
    ]
    metrics, extra = {}, {}
    rewards = reward(
        prompts=[[{"role": "user", "content": "q"}]] * 4,
        completions=completions,
        completion_ids=[[1, 2]] * 4,
        answer=["12"] * 4,
        problem=["q"] * 4,
        trainer_state=None,
        log_metric=metrics.__setitem__,
        log_extra=extra.__setitem__,
    )
    assert rewards == [1.0, 0.0, 0.0, 1.0]
    assert metrics == {
        "math/graded": 0.75, "math/unparseable": 0.25, "math/timed_out": 0.0, "math/errors": 0.0,
        "math/invalid_gold": 0.0, "math/think_unclosed": 0.25,
    }  # fmt: skip
    assert extra["math_status"] == ["correct", "wrong", "no_think_end", "correct"]
    assert extra["math_answer"] == ["12", "13", None, "12"]
    assert reward.__name__ == "math_correctness"  # TRL names the reward (and its logged mean) after this


def test_missing_answer_column_names_the_columns(reward):
    with pytest.raises(KeyError) as err:
        reward(prompts=["q"], completions=[r1("1")], solution=["1"], log_metric=print, trainer_state=None)
    msg = str(err.value)
    assert "'answer'" in msg and "['solution']" in msg and "answer_column" in msg


def test_duplicates_are_graded_once_and_cached(reward):
    before = reward.pool.stats["jobs"]
    scores = reward.score([r1("41")] * 16 + [r1("42")] * 16, ["42"] * 32)
    assert scores == [0.0] * 16 + [1.0] * 16
    assert reward.pool.stats["jobs"] - before == 2
    assert reward.score([r1("42")], ["42"]) == [1.0]
    assert reward.pool.stats["jobs"] - before == 2  # answered from the cache


def test_invalid_gold_is_counted_and_warned(reward, caplog):
    caplog.set_level(logging.WARNING, logger="dler.rewards.reward")
    grades = reward.grade([r1("1"), r1("1"), r1("#")], ["", "\\sqrt{", "1"])
    assert [g.status for g in grades] == ["invalid_gold", "invalid_gold", "unparsed"]
    assert reward.summarize(grades)["invalid_gold"] == pytest.approx(2 / 3)
    assert "cannot be parsed" in caplog.text and "prepare_gold_answers" in caplog.text
    strict = MathReward(pool=reward.pool, on_invalid_gold="error")
    with pytest.raises(ValueError, match="cannot be parsed"):
        strict.score([r1("1")], [""])


def test_prepare_gold_answers(reward, caplog):
    rows = [{"problem": f"p{i}", "answer": a} for i, a in enumerate(["1", 142.0, "\\frac{1}{2}", "", "\\sqrt{", None])]
    with pytest.raises(ValueError) as err:
        prepare_gold_answers(rows, reward=reward)
    msg = str(err.value)
    assert "3 of 6" in msg and "'answer'" in msg and "row 3: ''" in msg and "row 4: '\\\\sqrt{'" in msg
    assert "on_invalid='skip'" in msg
    caplog.set_level(logging.WARNING, logger="dler.rewards.golds")
    kept, report = prepare_gold_answers(rows, reward=reward, on_invalid="skip")
    assert [r["problem"] for r in kept] == ["p0", "p1", "p2"]
    assert report.invalid == 3 and report.total == 6 and [i for i, _, _ in report.examples] == [3, 4, 5]
    assert "3 of 6" in caplog.text and "skipping" in caplog.text
    with pytest.raises(KeyError, match="solution"):
        prepare_gold_answers(rows, answer_column="solution", reward=reward)


def test_prepare_gold_answers_on_a_dataset(reward):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"problem": ["a", "b", "c"], "answer": ["3", "x^{", "\\frac{2}{3}"]})
    kept, report = prepare_gold_answers(ds, reward=reward, on_invalid="skip")
    assert kept["problem"] == ["a", "c"] and report.invalid == 1
    with pytest.raises(KeyError, match="columns are"):
        prepare_gold_answers(ds, answer_column="solution", reward=reward)


# ------------------------------------------------------------------------------------------ in-process path


def test_math_correctness_in_process():
    completions = [r1("\\frac{1}{2}"), r1("3"), "<think>no end \\boxed{0.5}"]
    assert math_correctness(completions, ["0.5", "4", "0.5"], num_workers=0) == [1.0, 0.0, 0.0]
    assert math_correctness(["\\boxed{2}"], ["2"], num_workers=0, require_think_end=False) == [1.0]


def test_grading_errors_are_counted_not_swallowed(monkeypatch, caplog):
    from dler.rewards import grading

    real = grading.grade

    def flaky(gold, pred, timeout):
        if pred == "13":
            raise RuntimeError("boom")
        return real(gold, pred, timeout)

    monkeypatch.setattr(grading, "grade", flaky)
    caplog.set_level(logging.WARNING, logger="dler.rewards.reward")
    local = MathReward(num_workers=0)
    metrics = {}
    scores = local(completions=[r1("12"), r1("13")], answer=["12", "12"], log_metric=metrics.__setitem__)
    assert scores == [1.0, 0.0]
    assert metrics["math/errors"] == 0.5 and metrics["math/graded"] == 0.5
    assert local.stats["error"] == 1
    assert "errors" in caplog.text and "'13'" in caplog.text


def test_warnings_are_rate_limited(caplog):
    from dler.rewards.reward import _Warnings

    caplog.set_level(logging.WARNING, logger="dler.rewards.reward")
    warn = _Warnings(every=60)
    for _ in range(5):
        warn("error", "same thing")
    warn("timeout", "other thing")
    assert caplog.text.count("same thing") == 1 and caplog.text.count("other thing") == 1


def test_reward_pickles_without_its_processes(reward):
    clone = pickle.loads(pickle.dumps(MathReward(answer_column="solution", num_workers=0)))
    assert clone.answer_column == "solution" and clone.pool is None
    assert clone.score([r1("2")], ["2"]) == [1.0]
    live = pickle.loads(pickle.dumps(reward))  # a live reward pickles its settings, not its processes
    assert live.pool is not reward.pool and live.pool.pids == [] and reward.pool.pids
    with pytest.raises(TypeError):
        pickle.dumps(reward.pool)
