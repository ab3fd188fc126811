"""Visual-token pruning and merging for multimodal-LLM prefill.

``with mmaccel.prune(model, method="fastv", keep=0.25): model.generate(...)`` prunes on that one model
instance and leaves it exactly as it was on exit. Methods: FastV, VisionZip, DivPrune, DART, ToMe, HoliTom
(one file each in this package). Importing this package does not import torch or transformers.
"""

from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import nn

    from .base import PruneMethod
    from .session import PruneSession

# method name -> (module, class)
_METHODS = {
    "none": None,
    "fastv": ("fastv", "FastV"),
    "visionzip": ("visionzip", "VisionZip"),
    "divprune": ("divprune", "DivPrune"),
    "dart": ("dart", "DART"),
    "tome": ("tome", "ToMe"),
    "holitom": ("holitom", "HoliTom"),
}
PRUNE_METHODS: tuple[str, ...] = tuple(_METHODS)


def method_class(method: str) -> type[PruneMethod]:
    """The class of a pruning method by name; its ``__init__`` signature types the method's parameters."""
    if method not in _METHODS or method == "none":
        raise ValueError(f"method={method!r} is not a pruning method; choose one of {', '.join(PRUNE_METHODS)}")
    module, cls = _METHODS[method]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make_method(method: str, keep: float, **params: Any) -> PruneMethod:
    """Build a method object by name; ``params`` are the method's own (e.g. ``layer`` for FastV)."""
    factory = method_class(method)
    try:
        return factory(keep, **params)
    except TypeError as err:
        raise TypeError(f"bad parameter for method={method!r}: {err}") from None


@contextmanager
def prune(
    model: nn.Module, method: str | PruneMethod = "fastv", keep: float = 0.25, **params: Any
) -> Iterator[PruneSession | None]:
    """Prune visual tokens of ``model`` inside the ``with`` block; the model is restored on exit.

    ``keep`` is the share of visual tokens kept, in (0, 1]. ``keep=1.0`` or ``method="none"`` installs
    nothing (and yields ``None``): the model runs exactly as unpruned.
    """
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be a number in (0, 1], got {keep!r}")
    from .families import detect_family
    from .session import PruneSession

    detect_family(model)  # unsupported classes fail here, even for method="none"
    if method == "none":
        yield None
        return
    if isinstance(method, str):
        method = make_method(method, keep, **params)
    elif params:
        raise TypeError("params are only accepted with a method name; set them on the method object")
    session = PruneSession(model, method)  # validates the method against this model
    if method.keep == 1.0:
        yield None
        return
    with session:
        yield session


class _CallableModule(types.ModuleType):
    """Lets ``mmaccel.prune(model, ...)`` call :func:`prune` while ``mmaccel.prune.bench`` etc. stay reachable."""

    def __call__(self, model: nn.Module, method: str | PruneMethod = "fastv", keep: float = 0.25, **params: Any):
        return prune(model, method, keep, **params)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["PRUNE_METHODS", "make_method", "method_class", "prune"]
