"""One parser for every ``name=value`` a user types: method specs, ``--param`` values, prune variants.

A value is typed by the annotation of the parameter it sets (``int``, ``float``, ``bool``, ``str``, and
``X | None``), read from the signature of the class that takes it, so ``delta=abc`` is refused with a message
that names ``delta`` and its type before any work starts. Ranges are declared once, as :class:`Range` objects
that both check a value and print themselves in help texts.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """A closed or open numeric interval; ``None`` ends are unbounded. ``str(Range(0, 1, low_open=True))`` is
    ``(0, 1]``, so help texts show exactly the check that runs."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __str__(self) -> str:
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        return f"{left}{low}, {high}{right}"

    def check(self, name: str, value: Any, owner: str = "") -> Any:
        """``value`` if it lies in the range, else a ValueError naming ``name`` (and ``owner``)."""
        if value not in self:
            where = f" of {owner}" if owner else ""
            raise ValueError(f"{name}{where} must be in {self}, got {value!r}")
        return value


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def split_assignment(text: str, where: str) -> tuple[str, str]:
    """``"name=value"`` -> ``("name", "value")``; anything else is a ValueError that names ``where``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"{where}: parameters look like name=value, got {text!r}")
    return name, value.strip()


def split_spec(spec: str, where: str) -> tuple[str, dict[str, str]]:
    """``"lantern:delta=0.2:k=30"`` -> ``("lantern", {"delta": "0.2", "k": "30"})``, values still text."""
    name, *parts = spec.strip().split(":")
    if not name:
        raise ValueError(f"{where}: {spec!r} names no method")
    raw: dict[str, str] = {}
    for part in parts:
        key, value = split_assignment(part, f"{where} {spec!r}")
        if key in raw:
            raise ValueError(f"{where}: {spec!r} sets {key!r} twice")
        raw[key] = value
    return name, raw


def parameters_of(*owners: Callable, skip: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``owners`` (classes or functions), their annotations resolved, ``skip`` left
    out. The first owner wins when two name the same parameter."""
    skipped = {"self", *skip}
    out: dict[str, inspect.Parameter] = {}
    for owner in owners:
        function = owner.__init__ if inspect.isclass(owner) else owner
        try:
            hints = typing.get_type_hints(function)
        except Exception:  # noqa: BLE001 - an unresolvable annotation only costs the typing of that value
            hints = {}
        for name, param in inspect.signature(function).parameters.items():
            if name in skipped or name in out or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            out[name] = param.replace(annotation=hints.get(name, param.annotation))
    return out


def _choices(annotation: Any) -> list[type]:
    """The plain types a value may take, ``NoneType`` included for optional parameters."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _choices(arg)]
    if annotation is inspect.Parameter.empty or annotation is Any:
        return [bool, int, float, str]
    return [annotation]


def type_name(annotation: Any) -> str:
    """``float | None`` -> ``"float or none"``: how a help text or an error describes a parameter's type."""
    names = []
    for kind in _choices(annotation):
        if typing.get_origin(kind) is typing.Literal:
            names += [repr(v) for v in typing.get_args(kind)]
        else:
            names.append("none" if kind is type(None) else getattr(kind, "__name__", str(kind)))
    return " or ".join(names)


def coerce(text: Any, annotation: Any, name: str, owner: str) -> Any:
    """``text`` as the type ``annotation`` names; a ValueError naming ``name``, ``owner`` and the type otherwise.

    Values that are not text (a caller's Python ``0.2``) are checked, not converted, except that an int is a
    valid float.
    """
    choices = _choices(annotation)
    if not isinstance(text, str):
        if text is None and type(None) in choices:
            return None
        for kind in choices:
            if kind is float and isinstance(text, int) and not isinstance(text, bool):
                return float(text)
            if isinstance(kind, type) and isinstance(text, kind) and not (kind is int and isinstance(text, bool)):
                return text
        if any(typing.get_origin(kind) is typing.Literal and text in typing.get_args(kind) for kind in choices):
            return text
        if not all(isinstance(kind, type) or typing.get_origin(kind) is typing.Literal for kind in choices):
            return text
        raise ValueError(f"{name} of {owner} takes {type_name(annotation)}, got {text!r}")
    lowered = text.strip().lower()
    for kind in choices:
        if typing.get_origin(kind) is typing.Literal:
            if text in typing.get_args(kind):
                return text
            continue
        if kind is type(None) and lowered in ("none", "null"):
            return None
        if kind is bool and lowered in ("true", "false"):
            return lowered == "true"
        if kind is int:
            try:
                return int(text)
            except ValueError:
                pass
        if kind is float:
            try:
                value = float(text)
            except ValueError:
                continue
            if math.isfinite(value):
                return value
        if kind is str:
            return text
    raise ValueError(f"{name} of {owner} takes {type_name(annotation)}, got {text!r}")


def typed(raw: Mapping[str, Any], parameters: Mapping[str, inspect.Parameter], owner: str) -> dict[str, Any]:
    """``raw`` values typed by ``parameters``; an unknown name is a ValueError listing what ``owner`` takes."""
    unknown = sorted(set(raw) - set(parameters))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {owner}; it takes {sorted(parameters) or 'none'}")
    return {name: coerce(value, parameters[name].annotation, name, owner) for name, value in raw.items()}


def describe(parameters: Mapping[str, inspect.Parameter], ranges: Mapping[str, Range] | None = None) -> str:
    """``delta: float in (0, 1], default 0.1; k: int or none`` for help texts."""
    parts = []
    for name, param in parameters.items():
        text = f"{name}: {type_name(param.annotation)}"
        if ranges and name in ranges:
            text += f" in {ranges[name]}"
        if param.default is not inspect.Parameter.empty:
            text += f", default {param.default}"
        parts.append(text)
    return "; ".join(parts) if parts else "no parameters"
