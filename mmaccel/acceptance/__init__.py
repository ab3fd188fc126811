"""Acceptance rules: pure tensor functions deciding how much of a drafted window to keep."""

from __future__ import annotations

from typing import Any

import torch

from ..params import parameters_of, typed
from .base import AcceptanceRule, Verdict, accepted_prefix, residual_sample
from .exact import ExactRule
from .greedy import GreedyRule
from .gsd import GSDRule
from .lantern import LanternPlusPlusRule, LanternRule
from .neighbours import cached_neighbours, nearest_neighbours
from .sjd import SJDRule
from .typical import TypicalRule

#: A new rule is its own file plus one line here.
RULES: dict[str, type[AcceptanceRule]] = {
    "exact": ExactRule,
    "greedy": GreedyRule,
    "sjd": SJDRule,
    "typical": TypicalRule,
    "lantern": LanternRule,
    "lantern++": LanternPlusPlusRule,
    "gsd": GSDRule,
}


def rule_class(name: str) -> type[AcceptanceRule]:
    if name not in RULES:
        raise ValueError(f"unknown acceptance rule {name!r}; choose one of {sorted(RULES)}")
    return RULES[name]


def rule_parameters(name: str) -> dict:
    """The parameters a user may set on rule ``name`` (its table arguments are the modality's, not the user's)."""
    return parameters_of(rule_class(name), skip=("embeddings", "neighbours"))


def make_rule(
    name: str, embeddings: torch.Tensor | None = None, cache_dir: Any = None, **params: Any
) -> AcceptanceRule:
    """Build a rule by name; ``embeddings`` is its nearby-token table when it reads one (``RULES[name].table``).

    Parameter values may be text (``"0.2"``, from a command line): they are typed by the rule's signature.
    """
    cls = rule_class(name)
    allowed = parameters_of(cls, skip=("embeddings",))
    return cls.build(embeddings, cache_dir, **typed(params, allowed, f"rule {name!r}"))


__all__ = [
    "RULES",
    "AcceptanceRule",
    "ExactRule",
    "GSDRule",
    "GreedyRule",
    "LanternPlusPlusRule",
    "LanternRule",
    "SJDRule",
    "TypicalRule",
    "Verdict",
    "accepted_prefix",
    "cached_neighbours",
    "make_rule",
    "nearest_neighbours",
    "residual_sample",
    "rule_class",
    "rule_parameters",
]
