"""Acceptance maps: each grid cell coloured by the forward pass that accepted its token."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# Anchors of the viridis colour map, enough for a smooth ramp without matplotlib.
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)


def colourise(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB along the viridis ramp."""
    x = np.clip(values, 0, 1) * (len(_ANCHORS) - 1)
    lo = np.floor(x).astype(int).clip(max=len(_ANCHORS) - 2)
    frac = (x - lo)[..., None]
    return (_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).round().astype(np.uint8)


def acceptance_map(accept_step: torch.Tensor, grid: tuple[int, int], size: int = 256, max_step: int | None = None):
    """A PIL image of one sample's ``accept_step`` ``[N]`` over an ``(h, w)`` grid (early = dark, late = yellow).

    ``max_step`` fixes the colour scale (e.g. the AR step count) so maps of different methods compare.
    """
    h, w = grid
    steps = accept_step.detach().cpu().float().numpy()[: h * w].reshape(h, w)
    top = float(max_step if max_step is not None else max(steps.max(), 1))
    rgb = colourise(steps / top)
    return Image.fromarray(rgb).resize((size, size * h // w), Image.NEAREST)
