"""Pre-checks: cheap reasons never to hand an answer to sympy. Pure string functions, no sympy.

latex2sympy and sympy stall on some answers (power towers, absurd exponents and factorials, deep nesting, huge
strings) and cannot always be interrupted. `precheck` finds those in microseconds, so that the grader only ever
parses answers that pass; the worker deadline remains the guarantee for anything else.
"""

import math
import re

MAX_ANSWER_CHARS = 1000  # a boxed answer longer than this is not an answer (matrices fit easily)
MAX_DEPTH = 10  # nesting of {}, (), []: latex2sympy slows down by ~0.15 s per level, real answers stay under 6
MAX_EXPONENT = 100_000  # 7^{10^6} costs sympy 0.3 s, 2^{10^8} 1.3 s, 10^{10^{10}} never finishes
MAX_POWER_DEPTH = 3  # x^{x^{x^{x}}} and deeper: no answer looks like that, and each level costs sympy more
MAX_POWERS = 64  # more power operators than any answer has (and it keeps this check itself cheap)
MAX_FACTORIAL = 10_000  # 10^5! costs 0.2 s, \binom{10^5}{5*10^4} 1.5 s

# Why an answer is not graded (each scores 0 and counts as unparseable).
TOO_LONG = "too_long"
TOO_DEEP = "too_deep"
HUGE_POWER = "huge_power"
HUGE_FACTORIAL = "huge_factorial"

_NESTING_TOKEN = re.compile(r"\\.|[{}()\[\]]", re.S)
_POWER_TOKEN = re.compile(r"\\.|\^|\*\*|[{}()]", re.S)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BINOM = re.compile(r"\\[dt]?binom\s*\{")
# an exponent without braces: a number, possibly continued by more powers (`9**9**9`, `2^3^4`)
_BARE_EXPONENT = re.compile(r"-?\d+(?:\.\d+)?(?:\s*(?:\^|\*\*)\s*(?:-?\d+(?:\.\d+)?|\{[^{}]*\})){0,8}")
_POWER_OPERATOR = re.compile(r"\^|\*\*")
_FACTORIAL_ARG = re.compile(r"(\d+)\s*!")
_FACTORIAL = re.compile(r"(?<!\\)!(?!=)")


def nesting_depth(s: str) -> int:
    """Deepest nesting of (), [] and {} (escaped ones like `\\{` included, since they nest in sympy too)."""
    depth = best = 0
    for tok in _NESTING_TOKEN.finditer(s):
        t = tok.group()
        if t[0] == "\\":
            t = t[1:]
        if t in "{([":
            depth += 1
            best = max(best, depth)
        elif t in "})]":
            depth = max(0, depth - 1)
    return best


def power_depth(s: str) -> int:
    """How many exponents are nested in each other: `x^2` is 1, `e^{x^2}` 2, `5^{5^{5^5}}` 3."""
    stack: list[bool] = []  # for each open bracket: is it an exponent?
    depth = best = 0
    caret_end = -1  # end of the last ^ or **
    for tok in _POWER_TOKEN.finditer(s):
        t = tok.group()
        if t in ("^", "**"):
            best = max(best, depth + 1)
            caret_end = tok.end()
            continue
        if t in "{(":
            is_exp = caret_end >= 0 and not s[caret_end : tok.start()].strip()
            stack.append(is_exp)
            depth += is_exp
        elif t in "})" and stack:
            depth -= stack.pop()
        caret_end = -1
    return best


def group_end(s: str, i: int) -> int:
    """Index of the bracket closing the one at `s[i]`, or -1."""
    open_ch = s[i]
    close_ch = {"{": "}", "(": ")", "[": "]"}[open_ch]
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return -1


def _strip_group(s: str) -> str:
    s = s.strip()
    while len(s) >= 2 and s[0] in "{(" and group_end(s, 0) == len(s) - 1:
        s = s[1:-1].strip()
    return s.replace("\\left", "").replace("\\right", "") if "\\left" in s else s


def numeric_log10(s: str, _depth: int = 0) -> float | None:
    """log10 of |value| for a numeric power expression (`12`, `10^{10}`, `5^{5^{5^5}}`, `(2**3)**4`), else None.

    Works in log space, so towers far beyond float range come out as inf instead of being computed.
    """
    s = _strip_group(s)
    if not s or _depth > 20:
        return None
    if s[0] in "+-":
        return numeric_log10(s[1:], _depth + 1)
    if _NUMBER.fullmatch(s):
        v = abs(float(s))
        return math.log10(v) if v > 0 else -math.inf
    # split at the first top-level power operator (powers are right-associative)
    depth = 0
    j = 0
    while j < len(s):
        c = s[j]
        if c == "\\":
            return None  # a command: not a plain number
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif depth == 0 and (c == "^" or s.startswith("**", j)):
            width = 1 if c == "^" else 2
            return _power_log10(s[:j], s[j + width :], _depth + 1)
        j += 1
    return None


def _power_log10(base: str, exponent: str, depth: int) -> float | None:
    """log10 of |base^exponent| (`numeric_log10` of both sides), None if either side is not numeric."""
    base_log = numeric_log10(base, depth)
    exp_log = numeric_log10(exponent, depth)
    if base_log is None or exp_log is None:
        return None
    if base_log == -math.inf or base_log == 0.0:  # 0^x, 1^x
        return base_log
    exp_value = 10.0**exp_log if exp_log < 300 else math.inf
    return math.inf if exp_value == math.inf else base_log * exp_value


def _exponent_arg(s: str, i: int) -> str:
    """The exponent written right after the power operator ending at `s[i-1]`."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i < len(s) and s[i] in "{(":
        end = group_end(s, i)
        return s[i : end + 1] if end > 0 else s[i:]
    m = _BARE_EXPONENT.match(s, i)
    return m.group() if m else ""


def _group_before(s: str, i: int) -> str:
    """The operand that ends just before index `i` (a number or a bracketed group), for factorials."""
    j = i - 1
    while j >= 0 and s[j] == " ":
        j -= 1
    if j < 0:
        return ""
    if s[j].isdigit():
        k = j
        while k >= 0 and (s[k].isdigit() or s[k] == "."):
            k -= 1
        return s[k + 1 : j + 1]
    if s[j] in ")}]":
        close_ch, open_ch = s[j], {")": "(", "}": "{", "]": "["}[s[j]]
        depth = 0
        for k in range(j, -1, -1):
            if s[k] == close_ch:
                depth += 1
            elif s[k] == open_ch:
                depth -= 1
                if depth == 0:
                    return s[k : j + 1]
    return ""


def precheck(s: str, max_chars: int = MAX_ANSWER_CHARS, max_depth: int = MAX_DEPTH) -> str:
    """Cheap reasons to never hand `s` to sympy: "ok" or one of TOO_LONG, TOO_DEEP, HUGE_POWER, HUGE_FACTORIAL."""
    if len(s) > max_chars:
        return TOO_LONG
    if nesting_depth(s) > max_depth:
        return TOO_DEEP
    if ("^" in s or "**" in s) and _huge_power(s):
        return HUGE_POWER
    if ("!" in s and _huge_factorial(s)) or ("binom" in s and _huge_binomial(s)):
        return HUGE_FACTORIAL
    return "ok"


def _huge_power(s: str) -> bool:
    """Too many powers, powers nested too deep, or an exponent above `MAX_EXPONENT`."""
    powers = [m.end() for m in _POWER_OPERATOR.finditer(s)]
    if len(powers) > MAX_POWERS or power_depth(s) > MAX_POWER_DEPTH:
        return True
    for end in powers:
        log_exp = numeric_log10(_exponent_arg(s, end))
        if log_exp is not None and log_exp > math.log10(MAX_EXPONENT):
            return True
    return False


def _huge_factorial(s: str) -> bool:
    """A factorial of more than `MAX_FACTORIAL`, or of a bracket holding a factorial above 7! ((8!)! = 40320!)."""
    for m in _FACTORIAL.finditer(s):
        arg = _group_before(s, m.start())
        log_arg = numeric_log10(arg) if arg else None
        if log_arg is not None and log_arg > math.log10(MAX_FACTORIAL):
            return True
        if arg and arg[0] in "({[" and any(int(n) > 7 for n in _FACTORIAL_ARG.findall(arg)):
            return True
    return False


def _huge_binomial(s: str) -> bool:
    """A binomial coefficient whose top is above `MAX_FACTORIAL`."""
    for m in _BINOM.finditer(s):
        end = group_end(s, m.end() - 1)
        log_n = numeric_log10(s[m.end() : end]) if end > 0 else None
        if log_n is not None and log_n > math.log10(MAX_FACTORIAL):
            return True
    return False
