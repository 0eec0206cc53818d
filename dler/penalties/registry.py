"""Penalty registry: pick a penalty by name; third-party penalties plug in by entry point.

    get_penalty("cosine", max_length=4000)      # what `penalty: cosine` + `penalty_kwargs: {...}` resolve to
    available_penalties()                       # sorted names, entry-point plugins included

A penalty is a dataclass subclass of `LengthPenalty` whose fields are its parameters (`param()`, checked when it is
built); `register_penalty` gives it its name. Plugins register under the entry-point group `dler.penalties`
(`name = "module:Class"`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import re
from collections.abc import Callable
from typing import Any

from dler.penalties.base import LengthPenalty

ENTRY_POINT_GROUP = "dler.penalties"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_REGISTRY: dict[str, type[LengthPenalty]] = {}
_plugins_loaded = False


def penalty_params(cls: type[LengthPenalty]) -> dict[str, Any]:
    """The parameters `get_penalty` accepts for `cls`, with their defaults (`inspect.Parameter.empty` if required)."""
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty
        for f in dataclasses.fields(cls)
        if f.init
    }


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
    """Class decorator: register a dataclass `LengthPenalty` subclass under `name`, the one place its `name` is set.

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


def _same(a: type | None, b: type) -> bool:
    """The same class, or the same one imported again (a reloaded module)."""
    return a is b or (a is not None and _qualname(a) == _qualname(b))


def _check_declaration(cls: Any, where: str) -> None:
    """A concrete dataclass `LengthPenalty` whose parameters are its fields, and which leaves `name` to the registry."""
    if not (isinstance(cls, type) and issubclass(cls, LengthPenalty)):
        raise TypeError(f"{where}: {cls!r} is not a dler.penalties.LengthPenalty subclass")
    if inspect.isabstract(cls):
        raise TypeError(f"{where}: {_qualname(cls)} is abstract (implement __call__)")
    fields = cls.__dataclass_fields__
    loose = [n for n, kind in inspect.get_annotations(cls).items() if n not in fields and "ClassVar" not in str(kind)]
    init = list(inspect.signature(cls).parameters) != [f.name for f in dataclasses.fields(cls) if f.init]
    if loose or init:
        raise TypeError(
            f"{where}: {_qualname(cls)} has parameters that are not dataclass fields ({', '.join(loose) or '__init__'})"
            ": decorate the class with @dataclass(eq=False) below @register_penalty, declare each parameter as a "
            "field (e.g. `scale: float = param(0.5, ge=0.0)`) and put cross-parameter checks in `check()`"
        )
    own = cls.__dict__.get("name")
    if own is not None and not _same(_REGISTRY.get(own), cls):
        raise TypeError(f"{where}: {_qualname(cls)} sets name = {own!r} itself; remove it, the registry sets it")


def _register(name: str, cls: Any, where: str) -> None:
    _check_declaration(cls, where)
    own = cls.__dict__.get("name")
    if own is not None and own != name:
        raise ValueError(f"{where}: {_qualname(cls)} is already registered as {own!r}")
    existing = _REGISTRY.get(name)
    if existing is not None and not _same(existing, cls):
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
    unknown = sorted(set(params) - set(penalty_params(cls)))
    if unknown:
        raise ValueError(
            f"penalty {name!r}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"accepted: {_defaults_text(cls) or '(none)'}"
        )
    return cls(**params)


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
                "formula": cls.formula or doc,
                "defaults": _defaults_text(cls),
                "reference": cls.reference,
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
