"""The arguments of ``mmaccel bench prune``, checked and typed before any work.

Method parameters, in a variant (``divprune:proportional=true``) or a ``--param``, are typed by the
``__init__`` signature of the method's class (:mod:`mmaccel.params`), so a value of the wrong type or an
unknown name fails here, naming the parameter and its type, instead of in the middle of a bench. Every error
is a ValueError naming the argument as its caller calls it (the CLI: its flags).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmaccel.params import Range, parameters_of, split_spec, typed

from . import PRUNE_METHODS, make_method, method_class

KEEP_RANGE = Range(0.0, 1.0, low_open=True)


def keep_ratios(keeps: str | list[float], where: str = "keeps") -> list[float]:
    """Keep ratios from ``"0.5,0.25"`` or a list, each in (0, 1]; a ValueError naming ``where`` otherwise."""
    items = keeps.split(",") if isinstance(keeps, str) else list(keeps)
    out = []
    for item in items:
        try:
            value = float(item.strip() if isinstance(item, str) else item)
        except (TypeError, ValueError):
            raise ValueError(f"{where} takes comma-separated keep ratios in {KEEP_RANGE}, got {item!r}") from None
        out.append(KEEP_RANGE.check(where, value))
    if not out:
        raise ValueError(f"{where} names no keep ratio")
    return out


def positive_int(value: int | str, where: str) -> int:
    """``value`` as a whole number >= 1; a ValueError naming ``where`` otherwise (0 never means "all")."""
    number = value
    if isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"{where} must be a whole number >= 1, got {value!r}")
    return number


def method_params(method: str, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``raw`` (text or Python values) typed by the ``__init__`` signature of ``method``'s class, ``keep``
    aside; an unknown name or a value of the wrong type is a ValueError naming ``where``, the parameter and its
    type."""
    try:
        return typed(raw, parameters_of(method_class(method), skip=["keep"]), method)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def method_variant(spec: str, where: str = "methods") -> tuple[str, dict[str, Any]]:
    """``"divprune:proportional=true"`` -> ``("divprune", {"proportional": True})``: a method name, optionally
    followed by ``:name=value`` parameters, so two settings of one method can be benchmarked side by side."""
    name, raw = split_spec(spec, where)
    if name not in PRUNE_METHODS:
        raise ValueError(f"{where}: unknown method {name!r} in {spec!r}; choose from {', '.join(PRUNE_METHODS)}")
    if raw and name == "none":
        raise ValueError(f"{where}: 'none' takes no parameters, got {spec!r}")
    return name, method_params(name, raw, where) if raw else {}


def variant_params(spec: str, params: dict[str, dict[str, Any]] | None) -> tuple[str, dict[str, Any]]:
    """A variant's name and parameters: those of ``params[name]`` (``--param``), overridden by its own."""
    name, own = method_variant(spec)
    return name, {**(params or {}).get(name, {}), **own}


#: What :func:`check_arguments` calls each argument in its errors; the CLI passes its flags instead.
ARGUMENT_NAMES = {
    "methods": "methods",
    "keeps": "keeps",
    "params": "params",
    "limit": "limit",
    "batch_size": "batch_size",
}


def check_arguments(
    methods: list[str] | str,
    keeps: list[float] | str,
    params: Mapping[str, Mapping[str, Any]] | None,
    limit: int | str | None,
    batch_size: int | str,
    names: Mapping[str, str] = ARGUMENT_NAMES,
) -> tuple[list[str], list[float], dict[str, dict[str, Any]], int | None, int]:
    """The bench's arguments checked before any work and returned typed: method variants, keep ratios,
    parameters (text or Python values, typed by each method's signature), question limit and batch size.
    Every error is a ValueError that names the argument as ``names`` calls it."""
    methods = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    keeps = keep_ratios(keeps, names["keeps"])
    limit = None if limit is None else positive_int(limit, names["limit"])
    batch_size = positive_int(batch_size, names["batch_size"])
    variants = [method_variant(m, names["methods"]) for m in methods]
    benchmarked = [name for name, _ in variants]
    for m in params or {}:
        if m not in benchmarked or m == "none":
            raise ValueError(f"{names['params']}: {m!r} is not one of the benchmarked pruning methods {benchmarked}")
    params = {m: method_params(m, values, names["params"]) for m, values in (params or {}).items()}
    for spec, (name, own) in zip(methods, variants):
        if name == "none":
            continue
        try:
            make_method(name, keeps[0], **{**params.get(name, {}), **own})  # out-of-range values fail here
        except (TypeError, ValueError) as err:
            raise ValueError(f"{names['methods']} {spec!r}: {err}") from None
    return methods, keeps, params, limit, batch_size
