"""math-verify calls for one answer. Runs inside a grading worker (or in-process with `num_workers=0`).

Gold and prediction are short strings already extracted (`dler.rewards.extract`) and pre-checked
(`dler.rewards.prechecks`). Two graders:

- `grade` (the dler grader): `dler.rewards.forms` first reads what math-verify misreads (e-notation, units,
  choice labels, redundant braces), then both sides are parsed the same way (wrapped in `\\boxed{}`) and
  `verify(gold, prediction)` is called in that order (it is not symmetric);
- `grade_released` (DLER's released reward): math-verify OR the normalised-string check OR sympy equality.

Each parse is cached per process, and math-verify's own timeout is a second line of defence behind the worker
deadline. Exceptions and timeouts are reported as statuses, never swallowed.
"""

import threading
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from math_verify.utils import timeout as alarm
from sympy import Basic, Expr, MatrixBase

from dler.rewards import forms, released
from dler.rewards.prechecks import precheck
from dler.rewards.status import CORRECT, ERROR, INVALID_GOLD, TIMEOUT, UNPARSED, WRONG

_EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())
_OK = "ok"


def inner_timeout(seconds: float | None) -> int | None:
    """math-verify wants whole seconds, and its SIGALRM timer only works in a process's main thread."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, int(seconds))


def describe_error(exc: BaseException) -> str:
    """`Type: message` of an exception, the message cut at 200 characters."""
    # never str() a sympy object carried by an exception: printing a huge expression can itself hang
    arg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    return f"{type(exc).__name__}: {arg[:200]}"


@lru_cache(maxsize=16384)
def _parse(wrapped: str, timeout: int | None) -> tuple[str, tuple]:
    try:
        parsed = parse(wrapped, extraction_config=_EXTRACTION, parsing_timeout=timeout, raise_on_error=True)
    except TimeoutException:
        return TIMEOUT, ()
    except Exception as exc:
        return ERROR, (describe_error(exc),)
    if not any(isinstance(x, (Basic, MatrixBase)) for x in parsed):
        return UNPARSED, tuple(x for x in parsed if isinstance(x, str))
    return _OK, tuple(parsed)


def parse_answer(text: str, timeout: int | None) -> tuple[str, tuple]:
    """Parse an extracted answer: ("ok", parsed), ("unparsed", strings), ("timeout", ()) or ("error", (why,))."""
    return _parse("\\boxed{" + text + "}", timeout)


# Below this magnitude math-verify's rounding to 6 decimals stops telling numbers apart (1.2e-9 "equals" 5e-9);
# there, numbers must agree to this relative precision (three significant figures).
_TINY = 1e-3
_RELATIVE = 1e-3


def tiny_numbers_differ(gold, pred) -> bool:
    """True for two numbers below `_TINY` in size that differ by more than `_RELATIVE` of the larger.

    math-verify compares floats after rounding them to 6 decimals, so every answer below 5e-7 equals every other
    one, and 1.34e-5 equals 1.3e-5. A careful grader compares such numbers by significant figures.
    """
    if not (isinstance(gold, Expr) and isinstance(pred, Expr) and gold.is_number and pred.is_number):
        return False
    try:
        a, b = complex(gold.evalf()), complex(pred.evalf())
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return False
    scale = max(abs(a), abs(b))
    return scale < _TINY and abs(a - b) > _RELATIVE * scale


def _verify(gold_parsed: tuple, pred_parsed: tuple, timeout: int | None, dler: bool = True) -> tuple[bool, str, str]:
    """Whether any reading of the prediction matches any reading of the gold: (matched, status, detail).

    `dler` adds the dler grader's rule for tiny numbers (`tiny_numbers_differ`); without it this is math-verify's
    own verdict.
    """
    error = None
    for g in gold_parsed:
        for p in pred_parsed:
            try:
                if verify(g, p, timeout_seconds=timeout, raise_on_error=True):
                    if not (dler and tiny_numbers_differ(g, p)):
                        return True, CORRECT, ""
            except TimeoutException:
                return False, TIMEOUT, "verify"
            except Exception as exc:  # reported below unless another reading of the answer matches
                error = exc
    if error is not None:
        return False, ERROR, "verify: " + describe_error(error)
    return False, WRONG, ""


def _grade_pair(gold: str, pred: str, timeout: int | None) -> tuple[float, str, str]:
    """math-verify on one (gold, prediction) pair, as `dler.rewards.forms.comparisons` rewrote them."""
    gold_status, gold_parsed = parse_answer(gold, timeout)
    if gold_status != _OK:
        return 0.0, INVALID_GOLD, f"gold {gold_status}"
    pred_status, pred_parsed = parse_answer(pred, timeout)
    if pred_status in (TIMEOUT, ERROR):
        return 0.0, pred_status, "parse" + (f": {pred_parsed[0]}" if pred_parsed else "")
    matched, status, detail = _verify(gold_parsed, pred_parsed, timeout)
    if matched:
        return 1.0, CORRECT, ""
    if pred_status == UNPARSED and status == WRONG:
        return 0.0, UNPARSED, ""
    return 0.0, status, detail


@lru_cache(maxsize=16384)
def grade(gold: str, pred: str, timeout: int | None = 5) -> tuple[float, str, str]:
    """(score, status, detail) for one extracted prediction against one gold answer (the dler grader)."""
    verdict, why, pairs = forms.comparisons(gold, pred)
    if verdict is not None:
        return (1.0, CORRECT, why) if verdict == forms.CORRECT else (0.0, WRONG, why)
    first = None
    for g, p in pairs:  # one pair per reading of the prediction (`2e-1`: 0.2, or 2e - 1)
        result = _grade_pair(g, p, timeout)
        if result[1] in (CORRECT, INVALID_GOLD):
            return result
        first = first or result
    return first


# ------------------------------------------------------------------------------------------ released grader


def released_math_verify(gold: str, pred: str, timeout: int | None) -> tuple[bool, str]:
    """The released grader's math-verify check: `verify(parse(gold), parse(pred))`, each wrapped in `$...$`
    unless it holds a `$` already. Returns (accepted, status)."""
    gold_status, gold_parsed = _parse(gold if "$" in gold else f"${gold}$", timeout)
    pred_status, pred_parsed = _parse(pred if "$" in pred else f"${pred}$", timeout)
    for status in (gold_status, pred_status):
        if status in (TIMEOUT, ERROR):
            return False, status
    if gold_status != _OK or pred_status != _OK:
        return False, UNPARSED
    matched, status, _ = _verify(gold_parsed, pred_parsed, timeout, dler=False)
    return matched, status


def _latex_to_sympy(text: str):
    from latex2sympy2_extended import latex2sympy

    return latex2sympy(text)


def sympy_equal(gold: str, pred: str, timeout: int | None) -> tuple[bool, str]:
    """The released grader's sympy check on two normalised strings: both parse (latex2sympy) to expressions and
    `simplify(gold - pred) == 0`. Returns (accepted, status); math-verify's alarm bounds the work in a main
    thread, the worker deadline everywhere."""
    if not gold or not pred or precheck(gold) != "ok" or precheck(pred) != "ok":
        return False, UNPARSED

    @alarm(timeout_seconds=timeout)
    def run() -> tuple[bool, str]:
        try:
            a, b = _latex_to_sympy(gold), _latex_to_sympy(pred)
        except Exception:
            return False, UNPARSED
        if not (isinstance(a, Expr) and isinstance(b, Expr)):
            return False, WRONG  # sets, relations, tuples: the released check compares expressions only
        try:
            from sympy import simplify

            return bool(simplify(a - b) == 0), WRONG
        except Exception:
            return False, ERROR

    try:
        accepted, status = run()
    except TimeoutException:
        return False, TIMEOUT
    return accepted, (CORRECT if accepted else status)


@lru_cache(maxsize=16384)
def grade_released(gold: str, pred: str, timeout: int | None = 5) -> tuple[float, str, str]:
    """(score, status, detail) under DLER's released grader: correct when the normalised strings are equal, OR
    math-verify accepts, OR sympy finds the normalised strings equal. The detail names the check that accepted."""
    if released.string_equal(gold, pred):
        return 1.0, CORRECT, "string"
    mv_ok, mv_status = released_math_verify(gold, pred, timeout)
    if mv_ok:
        return 1.0, CORRECT, "math_verify"
    sy_ok, sy_status = sympy_equal(released.normalize(gold), released.normalize(pred), timeout)
    if sy_ok:
        return 1.0, CORRECT, "sympy"
    statuses = (mv_status, sy_status)
    for status in (TIMEOUT, ERROR):
        if status in statuses:
            return 0.0, status, f"math_verify {mv_status}, sympy {sy_status}"
    if all(s == UNPARSED for s in statuses):
        return 0.0, UNPARSED, ""
    return 0.0, WRONG, ""


# One answer of each common shape: parsing them once fills latex2sympy's parser caches, which makes the first
# real answers of a fresh worker ~3x cheaper.
_WARM_UP = (
    "12", "-7", "0.25", "\\frac{3}{4}", "\\dfrac{5}{8}", "3\\sqrt{2}", "\\frac{\\sqrt{3}}{2}", "\\frac{2\\pi}{3}",
    "[-1, 4)", "(2, 5)", "\\left( 1, \\frac{1}{2} \\right)", "\\{1, 2, 3\\}", "(-\\infty, 3] \\cup (5, \\infty)",
    "\\text{(B)}", "x^2 + 3x + 2", "(x+1)^2", "y = 2x + 1", "2^{10}", "45^\\circ", "10\\%", "\\infty",
    "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "3 + 4i", "\\ln 2", "e^{2}", "\\sin x",
)  # fmt: skip


def warm_up(timeout: int | None = 5) -> None:
    """Grade one answer of each common shape (done by every new worker before it reports ready)."""
    for answer in _WARM_UP:
        grade(answer, answer, timeout)
    grade.cache_clear()  # keep the caches for real answers


def _self_check(result: tuple[float, str, str]) -> tuple[float, str, str]:
    score, status, detail = result
    if status == CORRECT:
        return 1.0, CORRECT, ""
    if status == INVALID_GOLD:
        return 0.0, INVALID_GOLD, detail
    return 0.0, INVALID_GOLD, f"does not match itself ({status}{': ' + detail if detail else ''})"


def check_gold(gold: str, timeout: int | None = 5) -> tuple[float, str, str]:
    """(1.0, "correct", "") when a gold answer parses to maths and grades correct against itself under the dler
    grader, else (0.0, "invalid_gold", why): such a gold would score 0 for every answer."""
    return _self_check(grade(gold, gold, timeout))


def check_gold_released(gold: str, timeout: int | None = 5) -> tuple[float, str, str]:
    """`check_gold` under the released grader (whose string check accepts any non-empty gold against itself)."""
    return _self_check(grade_released(gold, gold, timeout))
