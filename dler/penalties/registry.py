"""Penalty registry: pick a penalty by name, with checked parameters; third-party penalties plug in by entry point.

    get_penalty("cosine", max_length=4000)      # what `penalty: cosine` + `penalty_kwargs: {...}` resolve to
    available_penalties()                       # sorted names, entry-point plugins included

A penalty declares its parameters either as dataclass fields made with `param(default, ge=..., ...)` (checked and
coerced here: YAML/JSON ints become floats, lists become tuples) or as keyword arguments of its `__init__` (the class
checks them itself). Plugins register under the entry-point group `dler.penalties` (`name = "module:Class"`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dler.penalties.base import LengthPenalty

ENTRY_POINT_GROUP = "dler.penalties"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_REGISTRY: dict[str, type[LengthPenalty]] = {}
_plugins_loaded = False


# ---------------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ParamSpec:
    """How one parameter is checked: its type (items' type for tuples), bounds, choices."""

    kind: type
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    optional: bool = False  # None allowed
    min_items: int = 1  # tuples only

    def range_text(self, name: str) -> str:
        if self.choices is not None:
            return f"one of {self.choices}"
        low = f"{name} >= {self.ge}" if self.ge is not None else f"{name} > {self.gt}" if self.gt is not None else ""
        high = f"{name} <= {self.le}" if self.le is not None else f"{name} < {self.lt}" if self.lt is not None else ""
        return " and ".join(t for t in (low, high) if t) or "any value"


def param(
    default: Any,
    *,
    kind: type | None = None,
    ge=None,
    gt=None,
    le=None,
    lt=None,
    choices=None,
    min_items: int = 1,
    help: str = "",
):
    """A penalty parameter: a dataclass field whose type and range `check_params` enforces.

    `kind` defaults to the type of `default` (give it when the default is None); for a tuple parameter `kind` is the
    items' type, the bounds apply to every item, and it needs at least `min_items` items.
    """
    if kind is None:
        if default is None:
            raise TypeError("param(None) needs kind=")
        kind = type(default[0]) if isinstance(default, tuple) and default else type(default)
    spec = ParamSpec(kind, ge, gt, le, lt, tuple(choices) if choices else None, default is None, min_items)
    return field(default=default, metadata={"dler": spec, "help": help})


def _coerce(owner: str, name: str, value: Any, spec: ParamSpec, default: Any) -> Any:
    if value is None and spec.optional:
        return None
    if isinstance(default, tuple):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ValueError(f"{owner}: {name} must be a list of {spec.kind.__name__}, got {value!r}")
        items = tuple(_coerce(owner, f"{name}[{i}]", v, spec, None) for i, v in enumerate(value))
        if len(items) < spec.min_items:
            raise ValueError(f"{owner}: {name} needs at least {spec.min_items} item(s), got {list(items)}")
        return items
    kind, bad = spec.kind, False
    if kind is float:
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        value = value if bad else float(value)
    elif kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        bad = isinstance(value, bool) or not isinstance(value, int)
    else:
        bad = not isinstance(value, kind)
    if bad:
        expected = kind.__name__ + (" or None" if spec.optional else "")
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r} ({type(value).__name__})")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{owner}: {name}={value!r} is not allowed: must be {spec.range_text(name)}")
    if kind in (int, float) and not (
        (spec.ge is None or value >= spec.ge)
        and (spec.gt is None or value > spec.gt)
        and (spec.le is None or value <= spec.le)
        and (spec.lt is None or value < spec.lt)
    ):
        base = name.split("[")[0]
        raise ValueError(f"{owner}: {name}={value!r} is out of range: allowed {spec.range_text(base)}")
    return value


def check_params(penalty: LengthPenalty) -> None:
    """Check (and coerce in place) every `param()` field of a dataclass penalty; raises ValueError naming the field."""
    owner = f"penalty {type(penalty).name or type(penalty).__name__!r}"
    for f in dataclasses.fields(penalty):
        spec = f.metadata.get("dler")
        if spec is not None:
            value = _coerce(owner, f.name, getattr(penalty, f.name), spec, f.default)
            object.__setattr__(penalty, f.name, value)


def penalty_params(cls: type[LengthPenalty]) -> dict[str, Any]:
    """The parameters `get_penalty` accepts for `cls`, with their defaults (`inspect.Parameter.empty` if required)."""
    if dataclasses.is_dataclass(cls):
        return {
            f.name: f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty
            for f in dataclasses.fields(cls)
            if f.init
        }
    params = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params[p.name] = p.default
        elif p.kind is p.VAR_KEYWORD:
            params["**" + p.name] = inspect.Parameter.empty
    return params


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        steps = {b - a for a, b in zip(value, value[1:], strict=False)}
        if len(value) > 4 and len(steps) == 1:
            return f"{value[0]}..{value[-1]} step {steps.pop()}"
        return str(list(value))
    return repr(value)


def _defaults_text(cls: type[LengthPenalty]) -> str:
    return ", ".join(
        name if default is inspect.Parameter.empty else f"{name}={_value_text(default)}"
        for name, default in penalty_params(cls).items()
    )


# ---------------------------------------------------------------------------------------------------- registry
def register_penalty(name: str) -> Callable[[type[LengthPenalty]], type[LengthPenalty]]:
    """Class decorator: register a `LengthPenalty` subclass under `name` (and set its `name`).

    Registering the same class twice is a no-op; a different class under a taken name is an error.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"penalty name must be letters, digits, '_', '-' or '.', got {name!r}")

    def decorator(cls: type[LengthPenalty]) -> type[LengthPenalty]:
        _register(name, cls, where=f"register_penalty({name!r})")
        return cls

    return decorator


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _register(name: str, cls: Any, where: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, LengthPenalty)):
        raise TypeError(f"{where}: {cls!r} is not a dler.penalties.LengthPenalty subclass")
    if inspect.isabstract(cls):
        raise TypeError(f"{where}: {_qualname(cls)} is abstract (implement __call__)")
    own = cls.__dict__.get("name")
    if own and own != name:
        raise ValueError(f"{where}: {_qualname(cls)} declares name {own!r}, not {name!r}")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls and _qualname(existing) != _qualname(cls):
        raise ValueError(f"{where}: penalty {name!r} is already registered by {_qualname(existing)}")
    cls.name = name
    _REGISTRY[name] = cls


def _load_plugins() -> None:
    """Register every entry point of the group `dler.penalties` (once; a failure names the entry point)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        where = f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP!r})"
        try:
            cls = ep.load()
        except Exception as error:
            raise RuntimeError(f"{where} failed to load: {type(error).__name__}: {error}") from error
        if not (isinstance(cls, type) and issubclass(cls, LengthPenalty)):
            raise RuntimeError(f"{where} does not point to a dler.penalties.LengthPenalty subclass, got {cls!r}")
        try:
            _register(ep.name, cls, where)
        except (TypeError, ValueError) as error:
            raise RuntimeError(str(error)) from error
    _plugins_loaded = True


def available_penalties() -> list[str]:
    """Sorted names of every registered penalty, entry-point plugins included."""
    _load_plugins()
    return sorted(_REGISTRY)


def penalty_class(name: str) -> type[LengthPenalty]:
    """The class registered under `name`; unknown names raise ValueError listing the available ones."""
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown penalty {name!r}; available: {', '.join(available_penalties())}")
    return _REGISTRY[name]


def get_penalty(name: str, **params: Any) -> LengthPenalty:
    """Build the penalty registered under `name` with `params` (e.g. a config's `penalty_kwargs`).

    Unknown parameters raise ValueError naming the accepted ones with their defaults; out-of-range values raise
    ValueError naming the parameter, its value and the allowed range.
    """
    cls = penalty_class(name)
    accepted = penalty_params(cls)
    if not any(k.startswith("**") for k in accepted):
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(
                f"penalty {name!r}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"accepted: {_defaults_text(cls) or '(none)'}"
            )
    penalty = cls(**params)
    if dataclasses.is_dataclass(penalty):
        check_params(penalty)
    return penalty


# ---------------------------------------------------------------------------------------------------- docs
def describe_penalties() -> list[dict[str, str]]:
    """One row per registered penalty: name, formula, defaults, reference (from the classes, for the docs table)."""
    rows = []
    for name in available_penalties():
        cls = _REGISTRY[name]
        doc = (inspect.getdoc(cls) or "").split("\n")[0]
        rows.append(
            {
                "name": name,
                "formula": getattr(cls, "formula", "") or doc,
                "defaults": _defaults_text(cls),
                "reference": getattr(cls, "reference", ""),
            }
        )
    return rows


def penalties_table() -> str:
    """The Markdown table of `describe_penalties()` that docs/penalties.md carries."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| name | formula | defaults | reference |", "|---|---|---|---|"]
    for row in describe_penalties():
        formula, defaults = cell(row["formula"]), cell(row["defaults"])
        lines.append(f"| `{row['name']}` | {formula} | {defaults or '-'} | {cell(row['reference'])} |")
    return "\n".join(lines)
