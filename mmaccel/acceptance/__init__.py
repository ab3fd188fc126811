"""Acceptance rules: pure tensor functions deciding how much of a drafted window to keep."""

from __future__ import annotations

import inspect

import torch

from .base import AcceptanceRule, Verdict, accepted_prefix, residual_sample
from .exact import ExactRule
from .greedy import GreedyRule
from .gsd import GSDRule
from .lantern import LanternRule
from .neighbours import nearest_neighbours
from .sjd import SJDRule
from .typical import TypicalRule

RULES: dict[str, type[AcceptanceRule]] = {
    "exact": ExactRule,
    "greedy": GreedyRule,
    "sjd": SJDRule,
    "typical": TypicalRule,
    "lantern": LanternRule,
    "gsd": GSDRule,
}


def make_rule(name: str, embeddings: torch.Tensor | None = None, **params) -> AcceptanceRule:
    """Build a rule by name. ``lantern++`` is LANTERN's multiplicative mode (``lam``, default 2)."""
    if name == "lantern++":
        name, params = "lantern", {"lam": 2.0, **params}
    if name not in RULES:
        raise ValueError(f"unknown acceptance rule {name!r}; choose one of {sorted([*RULES, 'lantern++'])}")
    cls = RULES[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "embeddings"}
    unknown = set(params) - accepted
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for rule {name!r}; it takes {sorted(accepted)}")
    if cls.needs_embeddings:
        if embeddings is None:
            raise ValueError(f"rule {name!r} needs an embedding table (embeddings=...)")
        return cls(embeddings, **params)
    return cls(**params)


__all__ = [
    "RULES",
    "AcceptanceRule",
    "ExactRule",
    "GSDRule",
    "GreedyRule",
    "LanternRule",
    "SJDRule",
    "TypicalRule",
    "Verdict",
    "accepted_prefix",
    "make_rule",
    "nearest_neighbours",
    "residual_sample",
]
