"""Pure text logic of the math grader: where the answer is, what it says, and whether sympy may see it.

No processes, no sympy: every function here is cheap, bounded by the length caps, and testable on its own.
The grader (`dler.rewards.grading`) only ever parses what `extract_answer` and `normalize_gold` return.
"""

import math
import numbers
import re
import unicodedata

THINK_END = "</think>"
MAX_ANSWER_CHARS = 1000  # a boxed answer longer than this is not an answer (matrices fit easily)
MAX_DEPTH = 10  # nesting of {}, (), []: latex2sympy slows down by ~0.15 s per level, real answers stay under 6
MAX_EXPONENT = 100_000  # 7^{10^6} costs sympy 0.3 s, 2^{10^8} 1.3 s, 10^{10^{10}} never finishes
MAX_POWER_DEPTH = 3  # x^{x^{x^{x}}} and deeper: no answer looks like that, and each level costs sympy more
MAX_POWERS = 64  # more power operators than any answer has (and it keeps this check itself cheap)
MAX_FACTORIAL = 10_000  # 10^5! costs 0.2 s, \binom{10^5}{5*10^4} 1.5 s

# Why an answer is not graded. Everything except "ok" scores 0 and counts as unparseable.
NO_THINK_END = "no_think_end"
NO_BOX = "no_box"
UNCLOSED_BOX = "unclosed_box"
EMPTY = "empty"
TOO_LONG = "too_long"
TOO_DEEP = "too_deep"
HUGE_POWER = "huge_power"
HUGE_FACTORIAL = "huge_factorial"

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.S)
_NESTING_TOKEN = re.compile(r"\\.|[{}()\[\]]", re.S)
_POWER_TOKEN = re.compile(r"\\.|\^|\*\*|[{}()]", re.S)
_UNBRACED_BOX_ARG = re.compile(r"[ \t]*([^\s${}]+)")
_DOLLAR = re.compile(r"\\?\$")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PLAIN_NUMBER = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*")
_BINOM = re.compile(r"\\[dt]?binom\s*\{")
# an exponent without braces: a number, possibly continued by more powers (`9**9**9`, `2^3^4`)
_BARE_EXPONENT = re.compile(r"-?\d+(?:\.\d+)?(?:\s*(?:\^|\*\*)\s*(?:-?\d+(?:\.\d+)?|\{[^{}]*\})){0,8}")
_POWER_OPERATOR = re.compile(r"\^|\*\*")
_FACTORIAL_ARG = re.compile(r"(\d+)\s*!")

# Unicode that models emit for maths, mapped to the LaTeX latex2sympy understands. Control and format characters
# (NUL, zero-width, bidi marks, BOM, lone surrogates) are dropped.
_UNICODE_MAP = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "\\times ", "\u22c5": "\\cdot ", "\u00b7": "\\cdot ",
    "\u00f7": "\\div ", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u2264": "\\le ",
    "\u2265": "\\ge ", "\u2260": "\\ne ", "\u00b2": "^2", "\u00b3": "^3", "\u00bd": "\\frac{1}{2}",
    "\u00bc": "\\frac{1}{4}", "\u00be": "\\frac{3}{4}", "\u00b0": "^\\circ", "\u00a0": " ", "\u3000": " ",
    "\u2032": "'",
}  # fmt: skip
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Root signs, with what they become; their operand is the number, letters or bracket that follows (`_radicand`).
_ROOTS = {"\u221a": "\\sqrt", "\u221b": "\\sqrt[3]", "\u221c": "\\sqrt[4]"}
_RADICAND = re.compile(r"\d+(?:\.\d+)?|[A-Za-z]+")


def drop_controls(s: str) -> str:
    """Drop control and format characters (NUL, zero-width, bidi marks, BOM, lone surrogates); newlines and tabs
    become spaces. Nothing else changes: this is all the released grader's mode does to an answer."""
    s = _ASCII_CONTROL.sub("", s).replace("\n", " ").replace("\t", " ")
    if s.isascii():
        return s
    # Cc, Cf, Cs, Co, Cn: control, format, surrogate, private use, unassigned
    return "".join(ch for ch in s if ch.isascii() or unicodedata.category(ch)[0] != "C")


def _radicand(s: str, i: int) -> tuple[str, int] | None:
    """The operand of a unicode root sign, read from `s[i]` on, and where it ends; None if unclear.

    People write `√12`, `2√3`, `√(x+1)` and `√x` for the root of the whole number, bracket or letters. LaTeX's
    `\\sqrt12` would take only the first digit, so the operand is braced explicitly.
    """
    while i < len(s) and s[i] == " ":
        i += 1
    if i < len(s) and s[i] == "(":
        end = _group_end(s, i)
        return (s[i + 1 : end], end + 1) if end > 0 else None
    m = _RADICAND.match(s, i)
    return (m.group(), m.end()) if m else None


def clean_text(s: str) -> str:
    """`drop_controls`, then map maths unicode to the LaTeX latex2sympy understands (`√12` becomes `\\sqrt{12}`)."""
    s = drop_controls(s)
    if s.isascii():
        return s
    out: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch in _ROOTS:
            operand = _radicand(s, i + 1)
            if operand is None:  # `√{12}`, `√\\pi`: LaTeX reads the operand right already
                out.append(_ROOTS[ch])
                i += 1
            else:
                out.append(_ROOTS[ch] + "{" + clean_text(operand[0]) + "}")
                i = operand[1]
            continue
        if ch.isascii():
            out.append(ch)
        elif ch in _UNICODE_MAP:
            out.append(_UNICODE_MAP[ch])
        elif "\uff01" <= ch <= "\uff5e":  # full-width ASCII (digits, letters, brackets)
            out.append(chr(ord(ch) - 0xFEE0))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def completion_text(completion, think_end: str = THINK_END) -> str:
    """Text of a TRL completion: a string, or a conversation `[{"role": "assistant", "content": ...}, ...]`.

    Assistant messages are joined. A message whose chat-template parser split the thinking off into
    `reasoning_content` (or `thinking`/`reasoning`) is rebuilt as `thinking + think_end + content`, so the answer
    still follows a closed thinking block.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion or ():
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content") or ""
        if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}]
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        reasoning = next((message[k] for k in ("reasoning_content", "thinking", "reasoning") if message.get(k)), None)
        if isinstance(reasoning, str):
            content = reasoning + think_end + str(content)
        parts.append(str(content))
    return "\n".join(parts)


def answer_region(text: str, think_end: str | None = THINK_END, require_think_end: bool = True) -> str | None:
    """The part of a response that may hold the answer: everything after the first `think_end`.

    Returns None when the thinking is never closed and `require_think_end` is set (such a response scores 0).
    """
    if not think_end:
        return text
    i = text.find(think_end)
    if i < 0:
        return None if require_think_end else text
    return text[i + len(think_end) :]


def _rfind_box(text: str, commands: tuple[str, ...] = _BOX_COMMANDS) -> tuple[int, int]:
    """Position of the last box command (`\\boxed`/`\\fbox`), and the index just after its name ((-1, -1) if none)."""
    best = (-1, -1)
    for cmd in commands:
        end = len(text)
        while (j := text.rfind(cmd, 0, end)) >= 0:
            after = j + len(cmd)
            if after >= len(text) or not text[after].isalpha():  # skip \boxedfoo
                best = max(best, (j, after))
                break
            end = j
    return best


def last_boxed(
    text: str,
    max_chars: int = MAX_ANSWER_CHARS,
    max_depth: int = MAX_DEPTH,
    commands: tuple[str, ...] = _BOX_COMMANDS,
    braced_only: bool = False,
) -> tuple[str | None, str]:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, with balanced braces.

    Returns (content, "ok") or (None, reason). Escaped braces (`\\{`) do not count. The scan stops after `max_chars`
    characters or `max_depth` nested braces, so thousands of braces or a 100k-character box cost microseconds.
    A last box that never closes (a truncated response) has no answer, even if an earlier box closed.
    `commands` are the box commands looked for; with `braced_only`, a last box without a brace (`\\boxed 5`) has
    no answer (the released grader's rule) instead of taking the next token.
    """
    start, after = _rfind_box(text, commands)
    if start < 0:
        return None, NO_BOX
    j = after
    while j < len(text) and text[j] in " \t":
        j += 1
    if j >= len(text) or text[j] != "{":  # "\boxed 5": the argument is the next token
        if braced_only:
            return None, NO_BOX
        m = _UNBRACED_BOX_ARG.match(text, after)
        if not m or not m.group(1):
            return None, EMPTY
        arg = m.group(1).rstrip(".,;")
        return (arg, "ok") if len(arg) <= max_chars else (None, TOO_LONG)
    depth = 0
    limit = j + max_chars + 2
    for tok in _BRACE_TOKEN.finditer(text, j, min(len(text), limit)):
        t = tok.group()
        if t == "{":
            depth += 1
            if depth > max_depth:
                return None, TOO_DEEP
        elif t == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1 : tok.start()], "ok"
    return None, (TOO_LONG if len(text) >= limit else UNCLOSED_BOX)


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


def _group_end(s: str, i: int) -> int:
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
    while len(s) >= 2 and s[0] in "{(" and _group_end(s, 0) == len(s) - 1:
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
            base = numeric_log10(s[:j], _depth + 1)
            exp = numeric_log10(s[j + width :], _depth + 1)
            if base is None or exp is None:
                return None
            if base == -math.inf or base == 0.0:  # 0^x, 1^x
                return base
            exp_value = 10.0**exp if exp < 300 else math.inf
            return math.inf if exp_value == math.inf else base * exp_value
        j += 1
    return None


def _exponent_arg(s: str, i: int) -> str:
    """The exponent written right after the power operator ending at `s[i-1]`."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i < len(s) and s[i] in "{(":
        end = _group_end(s, i)
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
    """Cheap reasons to never hand `s` to sympy: "ok" or one of TOO_LONG, TOO_DEEP, HUGE_POWER, HUGE_FACTORIAL.

    Catches what is known to stall latex2sympy/sympy (power towers, absurd exponents and factorials, deep
    nesting, huge strings) in microseconds. The worker deadline remains the guarantee for anything else.
    """
    if len(s) > max_chars:
        return TOO_LONG
    if nesting_depth(s) > max_depth:
        return TOO_DEEP
    if "^" in s or "**" in s:
        powers = [m.end() for m in _POWER_OPERATOR.finditer(s)]
        if len(powers) > MAX_POWERS or power_depth(s) > MAX_POWER_DEPTH:
            return HUGE_POWER
        for end in powers:
            log_exp = numeric_log10(_exponent_arg(s, end))
            if log_exp is not None and log_exp > math.log10(MAX_EXPONENT):
                return HUGE_POWER
    limit = math.log10(MAX_FACTORIAL)
    if "!" in s:
        for m in re.finditer(r"(?<!\\)!(?!=)", s):
            arg = _group_before(s, m.start())
            log_arg = numeric_log10(arg) if arg else None
            if log_arg is not None and log_arg > limit:
                return HUGE_FACTORIAL
            if arg and arg[0] in "({[" and any(int(n) > 7 for n in _FACTORIAL_ARG.findall(arg)):
                return HUGE_FACTORIAL  # (8!)! = 40320! and beyond
    if "binom" in s:
        for m in _BINOM.finditer(s):
            end = _group_end(s, m.end() - 1)
            log_n = numeric_log10(s[m.end() : end]) if end > 0 else None
            if log_n is not None and log_n > limit:
                return HUGE_FACTORIAL
    return "ok"


def clean_answer(s: str) -> str:
    """Sanitise an extracted answer: control characters, unicode, `$` delimiters, surrounding blanks."""
    return _DOLLAR.sub("", clean_text(s)).strip()


def extract_answer(
    text: str,
    think_end: str | None = THINK_END,
    require_think_end: bool = True,
    max_chars: int = MAX_ANSWER_CHARS,
    max_depth: int = MAX_DEPTH,
) -> tuple[str | None, str]:
    """The R1-style final answer of a response: the last boxed answer after `think_end`, cleaned and pre-checked.

    Returns (answer, "ok") or (None, reason) where reason is one of the constants of this module.
    """
    region = answer_region(text, think_end, require_think_end)
    if region is None:
        return None, NO_THINK_END
    content, reason = last_boxed(region, max_chars, max_depth)
    if content is None:
        return None, reason
    answer = clean_answer(content)
    if not answer:
        return None, EMPTY
    reason = precheck(answer, max_chars, max_depth)
    return (answer, "ok") if reason == "ok" else (None, reason)


def normalize_gold(value, max_chars: int = MAX_ANSWER_CHARS, max_depth: int = MAX_DEPTH) -> tuple[str | None, str]:
    """A dataset's gold answer as the string the grader parses: (gold, "ok") or (None, reason).

    Accepts strings (optionally `$...$` or `\\boxed{...}`), ints and floats (AMC golds such as `142.0` become
    `"142"`; floats never go through scientific notation, which latex2sympy misreads), and one-element lists.
    """
    if isinstance(value, (list, tuple)):
        return normalize_gold(value[0], max_chars, max_depth) if len(value) == 1 else (None, "not_a_single_answer")
    if value is None or isinstance(value, bool):
        return None, EMPTY if value is None else "unsupported_type"
    if isinstance(value, numbers.Integral):
        return str(int(value)), "ok"
    if isinstance(value, numbers.Rational):
        return f"\\frac{{{value.numerator}}}{{{value.denominator}}}", "ok"
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return None, "nan"
        if math.isinf(v):
            return ("\\infty" if v > 0 else "-\\infty"), "ok"
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v)), "ok"
        text = repr(v)
        if "e" in text or "E" in text:
            from decimal import Decimal

            text = format(Decimal(text), "f")
        return text, "ok"
    if not isinstance(value, str):
        return None, "unsupported_type"
    text = value.strip()
    if "\\boxed" in text or "\\fbox" in text:
        content, reason = last_boxed(text, max_chars, max_depth)
        if content is None:
            return None, reason
        text = content
    text = clean_answer(text)
    if not text:
        return None, EMPTY
    if _PLAIN_NUMBER.fullmatch(text):
        return text.strip(), "ok"
    reason = precheck(text, max_chars, max_depth)
    return (text, "ok") if reason == "ok" else (None, reason)


def is_plain_number(s: str) -> bool:
    """True for golds such as `142`, `-3`, `0.5`: valid without asking sympy."""
    return bool(_PLAIN_NUMBER.fullmatch(s))
