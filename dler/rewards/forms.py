"""How the dler grader reads answer forms that math-verify alone misreads. Pure string functions, no sympy.

`comparisons(gold, answer)` turns one (gold, answer) pair into either a verdict decided by the text (two different
units, two different choice letters) or the pairs of strings math-verify must compare. Each rule below reads an
answer the way a careful human grader does (the evidence for each is in docs/rewards.md, "Decisions"):

- e-notation (`4.5e33`, `1.2e-5`) is a number in scientific notation, not 4.5 times Euler's e times 33;
- braces that wrap a whole answer (`{{12}}`) group nothing: TeX prints `12`; a full stop at the end (`12.`)
  ends the sentence, not the number;
- a choice label before a value (`\\text{(A) } 12`) is compared as a letter against a letter gold, and dropped
  against a value gold;
- a unit after a number (`5\\text{ cm}`, `9.6 \\mathrm{~km}`, `5 m`) must match the gold's unit when both carry
  one; when only one side carries a unit, the numbers are compared.

The released grader (`dler.rewards.released`) reproduces DLER's released reward and uses none of this.
"""

import re

from dler.rewards.prechecks import MAX_EXPONENT, group_end

CORRECT = "correct"
WRONG = "wrong"

# ------------------------------------------------------------------------------------------ e-notation

# A number immediately followed by e/E and an integer, as a whole token: not inside a word, a command (`\exp`),
# or a longer number. `e`, `2e`, `e^{2}` and `2e^{3}` have no integer right after the e and never match.
_MAX_EXPONENT_DIGITS = len(str(MAX_EXPONENT)) - 1  # the pre-checks' limit on exponents (`dler.rewards.prechecks`)
_E_NOTATION = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")


def _is_ambiguous_e(m: re.Match) -> bool:
    """`2e-1` and `3e+2` may be 2e - 1 and 3e + 2 (Euler's e); `4.5e-3`, `1.2e5` and `3e8` are only numbers."""
    return "." not in m.group(1) and m.group(2)[0] in "+-"


def expand_e_notation(s: str, ambiguous: bool = True) -> str:
    """Rewrite e-notation numbers as LaTeX powers of ten: `4.5e33` -> `4.5\\times10^{33}`.

    With `ambiguous=False`, forms that could also be a sum or difference with Euler's e (`2e-1`: an integer
    mantissa and a signed exponent) stay as they are.
    """
    if "e" not in s and "E" not in s:
        return s

    def sub(m: re.Match) -> str:
        if not ambiguous and _is_ambiguous_e(m):
            return m.group()
        if len(m.group(2).lstrip("+-")) > _MAX_EXPONENT_DIGITS:  # 1e99999999 would cost sympy a 10^8-digit number
            return m.group()
        exponent = m.group(2).lstrip("+")
        return f"{m.group(1)}\\times10^{{{exponent}}}"

    return _E_NOTATION.sub(sub, s)


def answer_readings(s: str) -> list[str]:
    """The ways an answer may be read: one, or two when it holds an ambiguous e-notation (`2e-1`)."""
    plain, numeric = expand_e_notation(s, ambiguous=False), expand_e_notation(s, ambiguous=True)
    return [plain] if plain == numeric else [numeric, plain]


def gold_reading(s: str) -> str:
    """The gold's one reading: e-notation in a gold is always a number (Minerva's convention; maths golds write
    Euler's e with spaces or braces, `2e - 1`, which never matches)."""
    return tidy(expand_e_notation(s, ambiguous=True))


# ------------------------------------------------------------------------------------------ braces


def strip_outer_braces(s: str) -> str:
    """`{{{12}}}` -> `12`: braces around a whole answer only group, and TeX prints nothing for them.

    Escaped braces (`\\{1, 2\\}`, a set) are kept: they print.
    """
    s = s.strip()
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}" and group_end(s, 0) == len(s) - 1:
        s = s[1:-1].strip()
    return s


def tidy(s: str) -> str:
    """`strip_outer_braces`, and drop a sentence's full stop at the end (`12.`, `(1, 2).`): it is not part of
    the answer, and math-verify reads nothing in `12.`. An ellipsis (`..`) stays."""
    for _ in range(3):  # `{12}.`, `{12.}`
        before = s
        s = strip_outer_braces(s)
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
        if s == before:
            break
    return s


# ------------------------------------------------------------------------------------------ choice labels

_TEXT_CMD = r"\\(?:text|textbf|textrm|textnormal|mathrm|mathbf|mbox)\s*"
_LETTER = r"[A-E]"
# A gold or answer that is only a choice letter: `C`, `(C)`, `\text{(C)}`, `\textbf{C}`, `\text{C)}`.
_LONE_CHOICE = re.compile(rf"^\s*(?:{_TEXT_CMD}\{{\s*\(?\s*({_LETTER})\s*\)?\s*\}}|\(?\s*({_LETTER})\s*\)?)\s*\.?\s*$")
# A choice label in brackets before something else: `(A) 12`, `\text{(A) } 12`, `\textbf{(A)} 12`, `\text{(A) 12}`.
_LABEL_IN_TEXT = re.compile(rf"^\s*{_TEXT_CMD}\{{\s*\(\s*({_LETTER})\s*\)([^{{}}]*)\}}(.*)$", re.S)
_LABEL_BARE = re.compile(rf"^\s*\(\s*({_LETTER})\s*\)(.*)$", re.S)


def choice_letter(s: str) -> str | None:
    """The letter of an answer that is only a choice (`\\text{(C)}` -> "C"), else None."""
    m = _LONE_CHOICE.match(s)
    return (m.group(1) or m.group(2)) if m else None


def split_choice(s: str) -> tuple[str | None, str]:
    """(letter, rest) of an answer that starts with a bracketed choice label and goes on (`(A) 12` -> ("A", "12")).

    (None, s) when there is no label or nothing follows it (a lone letter is `choice_letter`'s business).
    """
    m = _LABEL_IN_TEXT.match(s)
    if m:
        letter, rest = m.group(1), (m.group(2) + m.group(3)).strip()
    else:
        m = _LABEL_BARE.match(s)
        if not m:
            return None, s
        letter, rest = m.group(1), m.group(2).strip()
    rest = rest.lstrip(":=").strip()
    return (letter, rest) if rest else (None, s)


# ------------------------------------------------------------------------------------------ units

_UNIT_GROUP = re.compile(
    r"\\(?:text|textrm|textnormal|mathrm|mbox|rm|operatorname)\s*\{([^{}]*)\}"
    r"(\s*\^\s*(?:\{[^{}]*\}|-?\d))?\s*$"
)
_DEGREES = re.compile(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ)\s*$")
_UNIT_JOIN = re.compile(r"(?:\s|~|\\[,;:! ]|\\quad|\\cdot|/|\*)+$")
_SPACING = re.compile(r"~|\\[,;:! ]|\\quad|\\qquad")
# Letters, digits (exponents), spaces and the joining signs of compound units; no brackets, no `=`.
_UNIT_CHARS = re.compile(r"^[A-Za-z\u00b0\u00c5\u03bc\u2126\s\d/^\-.*{}\\]+$")
# Words that make a \text{...} a phrase rather than a unit.
_NOT_UNITS = frozenset(
    "and or if for when where otherwise is are the of to not no yes none all any only approximately approx about "
    "true false even odd undefined".split()
)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:\s*\\times\s*10\^\{?-?\d+\}?)?"
# A number, a space and a unit word, with nothing else: `5 m`, `9.6 km`, `3 cm^2`.
_PLAIN_UNIT = re.compile(rf"^\s*({_NUMBER})(?:\s|~|\\[,;: ])+([A-Za-z\u00c5\u2126]+(?:\^\{{?-?\d+\}}?)?)\s*$")

# Unit symbols, compared case-sensitively (mm is not Mm).
_SYMBOLS = frozenset(
    "m cm mm km nm um pm fm s ms us ns min h g kg mg K J kJ MJ eV keV MeV GeV W kW MW V mV N kN Pa kPa Hz kHz MHz "
    "GHz L mL mol A mA C T pc kpc Mpc ly AU au in ft mi yd lb oz rad sr".split()
)
# Unit words (lowercase, singular), with the symbol they mean.
_WORDS = {
    "meter": "m", "metre": "m", "centimeter": "cm", "centimetre": "cm", "millimeter": "mm", "millimetre": "mm",
    "kilometer": "km", "kilometre": "km", "nanometer": "nm", "nanometre": "nm", "micrometer": "um", "micron": "um",
    "second": "s", "sec": "s", "minute": "min", "min": "min", "hour": "h", "hr": "h", "day": "day", "year": "yr",
    "yr": "yr", "gram": "g", "kilogram": "kg", "milligram": "mg", "kelvin": "K", "joule": "J", "electronvolt": "eV",
    "watt": "W", "volt": "V", "newton": "N", "pascal": "Pa", "hertz": "Hz", "liter": "L", "litre": "L",
    "angstrom": "\u00c5", "aa": "\u00c5", "degree": "\u00b0", "deg": "\u00b0", "inch": "in", "foot": "ft",
    "feet": "ft", "mile": "mi", "yard": "yd", "pound": "lb", "ounce": "oz", "parsec": "pc", "radian": "rad",
    "ohm": "\u2126", "mole": "mol", "ampere": "A", "amp": "A", "coulomb": "C", "tesla": "T", "unit": "unit",
}  # fmt: skip
# Commands and characters that spell a unit symbol.
_UNIT_SYMBOLS = {"\\circ": "\u00b0", "\u00b0": "\u00b0", "\\AA": "\u00c5", "\u00c5": "\u00c5", "\\Omega": "\u2126"}
_TEXT_COMMANDS = frozenset(("text", "textrm", "textnormal", "mathrm", "mbox", "rm", "operatorname"))
_MICRO = re.compile(r"\\mu\s*|\u03bc|\u00b5")
_UNIT_TOKEN = re.compile(r"\\?[A-Za-z\u00b0\u00c5\u03bc\u2126]+|\^\{?-?\d+\}?|\d+|[/*]")


def _unit_like(text: str) -> bool:
    """Whether the content of a `\\text{...}` reads as a unit (`~km`, ` m/s`, `cm^{-3}`) rather than a phrase."""
    text = _SPACING.sub(" ", text).strip()
    if not text or not any(c.isalpha() for c in text) or not _UNIT_CHARS.match(text):
        return False
    return not any(w.lower() in _NOT_UNITS for w in re.findall(r"[A-Za-z]+", text))


def split_unit(s: str) -> tuple[str, str | None]:
    """(value, unit) of an answer that ends in a unit, else (s, None).

    A unit is one or more `\\text{...}`/`\\mathrm{...}` groups that read as units (`5\\text{ cm}`,
    `9.6 \\mathrm{~km}`, `3\\,\\mathrm{m}/\\mathrm{s}`, `10^{3}\\mathrm{~cm}^{-3}`), a trailing degree sign
    (`45^\\circ`), or a known unit word after a number and a space (`5 m`, `9.6 km`). Something must come before
    the unit: `\\text{(C)}` alone is not a quantity.
    """
    m = _PLAIN_UNIT.match(s)
    if m and _plain_unit_word(m.group(2)):
        return m.group(1).strip(), m.group(2)
    value, pieces = s, []
    while True:
        m = _DEGREES.search(value) if not pieces else None
        if m:
            pieces.append("\\circ")
            value = value[: m.start()]
            break
        m = _UNIT_GROUP.search(value)
        if not m or not _unit_like(m.group(1)):
            break
        pieces.append(m.group(1) + (m.group(2) or ""))
        value = value[: m.start()]
        join = _UNIT_JOIN.search(value)
        if join:
            if "/" in join.group():
                pieces.append("/")
            value = value[: join.start()]
    value = _UNIT_JOIN.sub("", value).strip()
    if not pieces or not value or value[-1] in "=+-(,[{":
        return s, None
    return value, " ".join(reversed(pieces))


def _plain_unit_word(word: str) -> bool:
    """Whether a bare word after a number is a unit: a known symbol or unit word, except the capitals that are
    more often a variable or a choice letter than amperes, coulombs or teslas."""
    base = re.sub(r"\^.*$", "", word)
    if base in ("A", "C", "T"):
        return False
    return base in _SYMBOLS or _singular(base.lower()) in _WORDS


def _singular(word: str) -> str:
    if word in _WORDS:
        return word
    for suffix in ("es", "s"):
        if word.endswith(suffix) and word[: -len(suffix)] in _WORDS:
            return word[: -len(suffix)]
    return word


def canonical_unit(unit: str) -> str:
    """One spelling per unit, as sorted `symbol^power` factors: `\\mathrm{~km}`, ` km` and `kilometers` -> `km`;
    `cm^{-3}` -> `cm^-3`; `square meters` -> `m^2`; `m/s`, `meters per second` and `m\\,s^{-1}` -> `m s^-1`;
    `\\circ` and `degrees` -> `°`. Symbols keep their case (mm is not Mm); words do not."""
    powers: dict[str, int] = {}
    sign, pending, last = 1, 1, None
    unit = _MICRO.sub("u", _SPACING.sub(" ", unit))
    for tok in _UNIT_TOKEN.findall(unit):
        if tok.startswith("^"):
            if last is not None:
                exponent = int(tok.strip("^{}"))
                powers[last] += (exponent - 1) * (1 if powers[last] > 0 else -1)
            continue
        if tok in ("/", "*") or tok.isdigit():
            sign = -1 if tok == "/" else sign
            continue
        low = tok.lstrip("\\").lower()
        if low in ("square", "sq", "cubic", "cu"):
            pending = 2 if low in ("square", "sq") else 3
            continue
        if low == "per":
            sign = -1
            continue
        if low in _TEXT_COMMANDS:
            continue
        symbol = _UNIT_SYMBOLS.get(tok) or _unit_symbol(tok, low)
        powers[symbol] = powers.get(symbol, 0) + sign * pending
        sign, pending, last = 1, 1, symbol
    return " ".join(f"{u}^{p}" if p != 1 else u for u, p in sorted(powers.items()) if p)


def _unit_symbol(tok: str, low: str) -> str:
    """A symbol as it is (`mm`, `Mm`, `K`), a unit word as its symbol (`Kilometers` -> `km`), other words lowercase."""
    if tok in _SYMBOLS:
        return tok
    word = _singular(low)
    if word in _WORDS:
        return _WORDS[word]
    return tok if len(tok) <= 2 else low


def same_unit(a: str, b: str) -> bool:
    """Whether two units (as `split_unit` returns them) name the same unit, spelling aside."""
    return canonical_unit(a) == canonical_unit(b)


# ------------------------------------------------------------------------------------------ the plan


def comparisons(gold: str, answer: str) -> tuple[str | None, str, list[tuple[str, str]]]:
    """What grading (gold, answer) takes: (verdict, why, []) when the text decides, else (None, "", pairs).

    The verdict is "correct" or "wrong"; the pairs are (gold, answer) strings for math-verify, one per reading of
    the answer. The rewrites here only drop labels, units and braces, or expand e-notation.
    """
    g = gold_reading(gold)
    g_label, g_rest = split_choice(g)
    gold_letter = g_label or choice_letter(g)
    gold_value = g_rest if g_label is not None else g
    g_value, g_unit = split_unit(gold_value)
    pairs: list[tuple[str, str]] = []
    why = ""
    for a in answer_readings(answer):
        a = tidy(a)
        a_label, a_rest = split_choice(a)
        answer_letter = a_label or choice_letter(a)
        if gold_letter is not None and answer_letter is not None:  # a choice against a choice: the letters decide
            return (CORRECT, "", []) if answer_letter == gold_letter else (WRONG, "different choice letters", [])
        a_value, a_unit = split_unit(a_rest if a_label is not None else a)
        if g_unit is not None and a_unit is not None and not same_unit(g_unit, a_unit):
            why = f"units differ: {canonical_unit(g_unit)!r} and {canonical_unit(a_unit)!r}"
            continue
        pair = (g_value, a_value)
        if pair not in pairs:
            pairs.append(pair)
    if not pairs:
        return WRONG, why, []
    return None, "", pairs
