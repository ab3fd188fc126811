"""Drafters: propose a window of tokens and the distribution each was drawn from."""

from __future__ import annotations

from typing import Any

from .base import Draft, Drafter
from .draft_model import DraftModelDrafter
from .eagle import EagleConfig, EagleDrafter, EagleHead, load_eagle, save_eagle
from .heads import DraftHeads, MultiHeadDrafter, distill_heads
from .jacobi import JacobiDrafter, UniformInit, WindowInit

DRAFTERS: dict[str, type[Drafter]] = {
    "jacobi": JacobiDrafter,
    "draft": DraftModelDrafter,
    "heads": MultiHeadDrafter,
    "eagle": EagleDrafter,
}


def make_drafter(name: str, **params: Any) -> Drafter:
    """Build a drafter by name: ``jacobi`` (window, init), ``draft`` (model, window), ``heads`` (heads),
    ``eagle`` (head, window)."""
    if name not in DRAFTERS:
        raise ValueError(f"unknown drafter {name!r}; choose one of {sorted(DRAFTERS)}")
    try:
        return DRAFTERS[name](**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for drafter {name!r}: {err}") from None


__all__ = [
    "DRAFTERS",
    "Draft",
    "DraftHeads",
    "DraftModelDrafter",
    "Drafter",
    "EagleConfig",
    "EagleDrafter",
    "EagleHead",
    "JacobiDrafter",
    "MultiHeadDrafter",
    "UniformInit",
    "WindowInit",
    "distill_heads",
    "load_eagle",
    "make_drafter",
    "save_eagle",
]
