"""math-verify calls for one answer. Runs inside a grading worker (or in-process with `num_workers=0`).

Gold and prediction are short strings already extracted and pre-checked by `dler.rewards.extract`. Both are
parsed the same way (wrapped in `\\boxed{}`), each parse is cached per process, and `verify(gold, prediction)` is
called in that order (it is not symmetric) with math-verify's own timeout as a second line of defence behind the
worker deadline. Exceptions and timeouts are reported as statuses, never swallowed.
"""

import threading
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from sympy import Basic, MatrixBase

from dler.rewards.status import CORRECT, ERROR, INVALID_GOLD, TIMEOUT, UNPARSED, WRONG

_EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())
_OK = "ok"


def inner_timeout(seconds: float | None) -> int | None:
    """math-verify wants whole seconds, and its SIGALRM timer only works in a process's main thread."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, int(seconds))


def _describe(exc: BaseException) -> str:
    # never str() a sympy object carried by an exception: printing a huge expression can itself hang
    arg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    return f"{type(exc).__name__}: {arg[:200]}"


@lru_cache(maxsize=16384)
def parse_answer(text: str, timeout: int | None) -> tuple[str, tuple]:
    """Parse an extracted answer: ("ok", parsed), ("unparsed", strings), ("timeout", ()) or ("error", (why,))."""
    try:
        parsed = parse(
            "\\boxed{" + text + "}", extraction_config=_EXTRACTION, parsing_timeout=timeout, raise_on_error=True
        )
    except TimeoutException:
        return TIMEOUT, ()
    except Exception as exc:
        return ERROR, (_describe(exc),)
    if not any(isinstance(x, (Basic, MatrixBase)) for x in parsed):
        return UNPARSED, tuple(x for x in parsed if isinstance(x, str))
    return _OK, tuple(parsed)


@lru_cache(maxsize=16384)
def grade(gold: str, pred: str, timeout: int | None = 5) -> tuple[float, str, str]:
    """(score, status, detail) for one extracted prediction against one gold answer."""
    gold_status, gold_parsed = parse_answer(gold, timeout)
    if gold_status != _OK:
        return 0.0, INVALID_GOLD, f"gold {gold_status}"
    pred_status, pred_parsed = parse_answer(pred, timeout)
    if pred_status in (TIMEOUT, ERROR):
        return 0.0, pred_status, "parse" + (f": {pred_parsed[0]}" if pred_parsed else "")
    error = None
    for g in gold_parsed:
        for p in pred_parsed:
            try:
                if verify(g, p, timeout_seconds=timeout, raise_on_error=True):
                    return 1.0, CORRECT, ""
            except TimeoutException:
                return 0.0, TIMEOUT, "verify"
            except Exception as exc:  # reported below unless another reading of the answer matches
                error = exc
    if pred_status == UNPARSED:
        return 0.0, UNPARSED, ""
    if error is not None:
        return 0.0, ERROR, "verify: " + _describe(error)
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


def check_gold(gold: str, timeout: int | None = 5) -> tuple[float, str, str]:
    """(1.0, "correct", "") when a gold answer parses to maths, else (0.0, "invalid_gold", why)."""
    status, parsed = parse_answer(gold, timeout)
    if status == _OK:
        return 1.0, CORRECT, ""
    return 0.0, INVALID_GOLD, status + (f": {parsed[0]}" if status == ERROR and parsed else "")
