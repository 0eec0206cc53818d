"""The released grader's text logic: where DLER's released reward looks for the answer, and its string check.

DLER's released reward (its patched verl) grades a response like this:

1. split the text on `</think>` and keep the part between the first and the second tag (`text.split(tag)[1]`);
   a response without the tag scores 0;
2. the last box there must be a literal `\\boxed{...}` (no `\\fbox`, no `\\boxed 5`); its content is the answer;
3. the answer is correct when ANY of three checks accepts it: math-verify, a comparison of normalised strings
   (`normalize`, below), or sympy equality of the normalised strings (`dler.rewards.grading.sympy_equal`).

This module holds steps 1, 2 and the string normaliser (pure functions, no sympy); `dler.rewards.grading` runs
the checks inside the grading workers. The dler grader's own rules (`dler.rewards.forms`) are not applied here:
this mode reproduces the released reward, including its leniencies (e.g. a unit is dropped before comparing, so
`5\\text{ cm}` matches `5\\text{ m}`). dler's safety measures stay: length and nesting pre-checks, worker
deadlines, and control characters dropped.
"""

import re

from dler.rewards import extract
from dler.rewards.prechecks import MAX_ANSWER_CHARS, MAX_DEPTH

# ------------------------------------------------------------------------------------------ extraction


def answer_region(text: str, think_end: str | None = extract.THINK_END, require_think_end: bool = True) -> str | None:
    """The text between the first and the second `think_end` (all of the rest when there is no second one).

    None when `think_end` never occurs and `require_think_end` is set: such a response scores 0. Text after a
    second `</think>` is never graded.
    """
    if not think_end:
        return text
    parts = text.split(think_end)
    if len(parts) < 2:
        return None if require_think_end else text
    return parts[1]


def extract_answer(
    text: str,
    think_end: str | None = extract.THINK_END,
    require_think_end: bool = True,
    max_chars: int = MAX_ANSWER_CHARS,
    max_depth: int = MAX_DEPTH,
) -> tuple[str | None, str]:
    """The released grader's answer: the content of the last `\\boxed{...}` in `answer_region`.

    Returns (answer, "ok") or (None, reason) with the reasons of `dler.rewards.extract`. Only control characters
    are removed from the answer (no unicode mapping), and the same pre-checks as the dler grader reject what
    would stall sympy.
    """
    region = answer_region(text, think_end, require_think_end)
    return extract.boxed_answer(region, _drop_controls, max_chars, max_depth, commands=("\\boxed",), braced_only=True)


def _drop_controls(answer: str) -> str:
    return extract.drop_controls(answer).strip()


# ------------------------------------------------------------------------------------------ string normaliser

_TEXT_GROUP = r"\\(?:text|textrm|textnormal|mbox|mathrm)\s*\{[^{}]*\}"
_TRAILING_UNIT = re.compile(rf"(?<=\S)\s*{_TEXT_GROUP}(?:\s*\^\s*(?:\{{[^{{}}]*\}}|\d))?\s*$")
_WHOLE_TEXT = re.compile(r"^\\(?:text|textrm|textnormal|textbf|mbox|mathrm)\s*\{([^{}]*)\}$")
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\u00b0|\\degree")
_SPACING = re.compile(r"\\[,;: ]|\\quad|\\qquad|~|\\displaystyle|\\!")
_LEADING_POINT = re.compile(r"(^|[\s{(\[,=+\-])\.(\d)")
_SQRT_SHORT = re.compile(r"\\sqrt\s*([0-9A-Za-z])")
_FRAC_SHORT = (
    (re.compile(r"\\frac\s*([0-9A-Za-z])\s*([0-9A-Za-z])"), r"\\frac{\1}{\2}"),  # \frac12, \frac ab
    (re.compile(r"\\frac\s*([0-9A-Za-z])\s*\{"), r"\\frac{\1}{"),  # \frac1{2}
    (re.compile(r"\\frac\s*(\{[^{}]*\})\s*([0-9A-Za-z])"), r"\\frac\1{\2}"),  # \frac{1}2
)
_INT_SLASH = re.compile(r"^(-?\d+)/(\d+)$")
# a space that separates a command from a following letter (`\pi x`) means something; every other space goes
_COMMAND_SPACE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")


def normalize(answer: str) -> str:
    """The released grader's string normalisation of an answer (MATH / Hendrycks style), written for dler.

    In order: drop line breaks, `\\!` and other spacing commands, `\\left`/`\\right`, `\\displaystyle`; degree
    signs; `\\$` and `$`; percent signs; a unit in a trailing `\\text{...}` after something else (`5\\text{ cm}`
    -> `5`); a trailing period; a whole-answer `\\text{...}` is unwrapped; `\\dfrac`/`\\tfrac` -> `\\frac`; an
    `x =` prefix with a lhs of at most 2 characters; `.5` -> `0.5`; `\\sqrt3` -> `\\sqrt{3}`; `\\frac12` ->
    `\\frac{1}{2}`; spaces (except between a command and a letter: `\\pi x`); `a/b` -> `\\frac{a}{b}` for integers;
    and `0.5` -> `\\frac{1}{2}`.
    Two answers pass the released grader's string check when their normalised forms are equal and non-empty.
    """
    s = answer.replace("\n", " ").strip()
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = _TRAILING_UNIT.sub("", s).strip().rstrip(" .")
    m = _WHOLE_TEXT.match(s)
    if m:
        s = m.group(1).strip().rstrip(" .")
    if s.count("=") == 1:
        lhs, rhs = s.split("=")
        if len(lhs.strip()) <= 2:
            s = rhs.strip()
    s = _LEADING_POINT.sub(r"\g<1>0.\2", s)
    s = _COMMAND_SPACE.sub("\\1\0", s)
    s = "".join(s.split()).replace("\0", " ")
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    for pattern, repl in _FRAC_SHORT:
        s = pattern.sub(repl, s)
    m = _INT_SLASH.match(s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    if s == "0.5":
        s = "\\frac{1}{2}"
    return s


def string_equal(gold: str, answer: str) -> bool:
    """The released grader's string check: equal after `normalize`, and not empty."""
    g = normalize(gold)
    return bool(g) and g == normalize(answer)
