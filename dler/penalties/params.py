"""Penalty parameters: dataclass fields with a type, bounds or choices, checked and coerced once, at construction.

Values from YAML/JSON are coerced: an int becomes a float for a float parameter, a whole float an int for an int
one, a list a tuple for a tuple one. A bad value raises ValueError naming the penalty, the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field
from typing import Any

_BOUNDS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


@dataclass(frozen=True)
class ParamSpec:
    """How one parameter is checked: its type (the items' type for a tuple), bounds, choices."""

    kind: type
    bounds: tuple[tuple[str, float], ...] = ()  # (bound name, limit), e.g. (("ge", 0.0), ("lt", 1.0))
    choices: tuple | None = None
    optional: bool = False  # None allowed
    is_tuple: bool = False
    min_items: int = 1  # tuples only

    def allowed(self, name: str) -> str:
        if self.choices is not None:
            return f"one of {self.choices}"
        return " and ".join(f"{name} {_BOUNDS[bound][0]} {limit}" for bound, limit in self.bounds) or "any value"


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
    """A penalty parameter: a dataclass field whose type and range are checked when the penalty is built.

    `kind` defaults to the type of `default` (give it when the default is None); for a tuple parameter `kind` is the
    items' type, the bounds apply to every item, and it needs at least `min_items` items.
    """
    is_tuple = isinstance(default, tuple)
    if kind is None:
        if default is None:
            raise TypeError("param(None) needs kind=")
        kind = type(default[0]) if is_tuple and default else type(default)
    limits = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    bounds = tuple((bound, limit) for bound, limit in limits.items() if limit is not None)
    spec = ParamSpec(kind, bounds, tuple(choices) if choices else None, default is None, is_tuple, min_items)
    return field(default=default, metadata={"dler": spec, "help": help})


def _checked(owner: str, name: str, value: Any, spec: ParamSpec) -> Any:
    """One value (a tuple's item: `name[i]`) of the spec's kind, within its choices and bounds."""
    kind = spec.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = kind.__name__ + (" or None" if spec.optional else "")
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r} ({type(value).__name__})")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{owner}: {name}={value!r} is not allowed: must be {spec.allowed(name)}")
    if kind in (int, float) and not all(_BOUNDS[bound][1](value, limit) for bound, limit in spec.bounds):
        raise ValueError(f"{owner}: {name}={value!r} is out of range: allowed {spec.allowed(name.split('[')[0])}")
    return value


def _coerce(owner: str, name: str, value: Any, spec: ParamSpec) -> Any:
    """`value` checked against `spec` and coerced (see the module docstring); raises ValueError naming `name`."""
    if value is None and spec.optional:
        return None
    if not spec.is_tuple:
        return _checked(owner, name, value, spec)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{owner}: {name} must be a list of {spec.kind.__name__}, got {value!r}")
    items = tuple(_checked(owner, f"{name}[{i}]", v, spec) for i, v in enumerate(value))
    if len(items) < spec.min_items:
        raise ValueError(f"{owner}: {name} needs at least {spec.min_items} item(s), got {list(items)}")
    return items


def check_fields(penalty: Any) -> None:
    """Check, and coerce in place, every `param()` field of a penalty."""
    owner = f"penalty {type(penalty).name or type(penalty).__name__!r}"
    for f in dataclasses.fields(penalty):
        spec = f.metadata.get("dler")
        if spec is not None:
            object.__setattr__(penalty, f.name, _coerce(owner, f.name, getattr(penalty, f.name), spec))
