"""Pure text logic of the math grader: where the answer is, what it says, and what a gold answer is.

No processes, no sympy: every function here is cheap, bounded by the length caps, and testable on its own.
The grader (`dler.rewards.grading`) only ever parses what `extract_answer` and `normalize_gold` return, both
pre-checked (`dler.rewards.prechecks`).
"""

import math
import numbers
import re
import unicodedata

from dler.rewards.prechecks import MAX_ANSWER_CHARS, MAX_DEPTH, TOO_DEEP, TOO_LONG, group_end, precheck

THINK_END = "</think>"

# Why an answer is not graded (each scores 0 and counts as unparseable); `dler.rewards.prechecks` has the others.
NO_THINK_END = "no_think_end"
NO_BOX = "no_box"
UNCLOSED_BOX = "unclosed_box"
EMPTY = "empty"

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.S)
_UNBRACED_BOX_ARG = re.compile(r"[ \t]*([^\s${}]+)")
_DOLLAR = re.compile(r"\\?\$")
_PLAIN_NUMBER = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*")

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
        end = group_end(s, i)
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
        return (None, NO_BOX) if braced_only else _unbraced_arg(text, after, max_chars)
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


def _unbraced_arg(text: str, i: int, max_chars: int) -> tuple[str | None, str]:
    """The argument of a box command without a brace (`\\boxed 5.`): the next token, trailing punctuation off."""
    m = _UNBRACED_BOX_ARG.match(text, i)
    if not m or not m.group(1):
        return None, EMPTY
    arg = m.group(1).rstrip(".,;")
    return (arg, "ok") if len(arg) <= max_chars else (None, TOO_LONG)


def clean_answer(s: str) -> str:
    """Sanitise an extracted answer: control characters, unicode, `$` delimiters, surrounding blanks."""
    return _DOLLAR.sub("", clean_text(s)).strip()


def _checked(answer: str, max_chars: int, max_depth: int) -> tuple[str | None, str]:
    """(answer, "ok"), or (None, why) for an empty answer or one the pre-checks reject."""
    if not answer:
        return None, EMPTY
    reason = precheck(answer, max_chars, max_depth)
    return (answer, "ok") if reason == "ok" else (None, reason)


def boxed_answer(region: str | None, clean, max_chars: int, max_depth: int, **box) -> tuple[str | None, str]:
    """The last box of an answer region (`last_boxed` with `box` options), `clean`ed and pre-checked: (answer,
    "ok") or (None, reason). A region of None (the thinking never closed) has no answer."""
    if region is None:
        return None, NO_THINK_END
    content, reason = last_boxed(region, max_chars, max_depth, **box)
    if content is None:
        return None, reason
    return _checked(clean(content), max_chars, max_depth)


def extract_answer(
    text: str,
    think_end: str | None = THINK_END,
    require_think_end: bool = True,
    max_chars: int = MAX_ANSWER_CHARS,
    max_depth: int = MAX_DEPTH,
) -> tuple[str | None, str]:
    """The R1-style final answer of a response: the last boxed answer after `think_end`, cleaned and pre-checked.

    Returns (answer, "ok") or (None, reason) where reason is one of the constants of this module or of
    `dler.rewards.prechecks`.
    """
    return boxed_answer(answer_region(text, think_end, require_think_end), clean_answer, max_chars, max_depth)


def normalize_gold(value, max_chars: int = MAX_ANSWER_CHARS, max_depth: int = MAX_DEPTH) -> tuple[str | None, str]:
    """A dataset's gold answer as the string the grader parses: (gold, "ok") or (None, reason).

    Accepts strings (optionally `$...$` or `\\boxed{...}`), ints and floats (AMC golds such as `142.0` become
    `"142"`; floats never go through scientific notation, which latex2sympy misreads), and one-element lists.
    """
    if isinstance(value, (list, tuple)):
        return normalize_gold(value[0], max_chars, max_depth) if len(value) == 1 else (None, "not_a_single_answer")
    if value is None or isinstance(value, bool):
        return None, EMPTY if value is None else "unsupported_type"
    if isinstance(value, numbers.Real):
        return _number_gold(value)
    if not isinstance(value, str):
        return None, "unsupported_type"
    text = value.strip()
    if "\\boxed" in text or "\\fbox" in text:
        content, reason = last_boxed(text, max_chars, max_depth)
        if content is None:
            return None, reason
        text = content
    text = clean_answer(text)
    if _PLAIN_NUMBER.fullmatch(text):
        return text, "ok"
    return _checked(text, max_chars, max_depth)


def _number_gold(value: numbers.Real) -> tuple[str | None, str]:
    """A numeric gold as LaTeX: integers as such, fractions as `\\frac`, floats in positional notation."""
    if isinstance(value, numbers.Integral):
        return str(int(value)), "ok"
    if isinstance(value, numbers.Rational):
        return f"\\frac{{{value.numerator}}}{{{value.denominator}}}", "ok"
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


def is_plain_number(s: str) -> bool:
    """True for golds such as `142`, `-3`, `0.5`: valid without asking sympy."""
    return bool(_PLAIN_NUMBER.fullmatch(s))
