"""The frame x codebook acceptance map as an image: which tokens were kept drafts, per forward."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def acceptance_image(step_map: torch.Tensor, scale: int = 6) -> Image.Image:
    """``[T, K]`` map (the committing forward, -1 for a token the target resampled) -> an RGB image, codebooks as
    rows: kept drafts in a hue that cycles with the forward (frames committed together share a colour), resampled
    tokens black."""
    m = step_map.T.numpy()
    hue = (m * 0.61803) % 1.0
    rgb = np.stack([0.5 + 0.5 * np.cos(2 * np.pi * (hue + s)) for s in (0.0, 1 / 3, 2 / 3)], -1)
    rgb[m < 0] = 0.0
    img = (rgb * 255).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
    return Image.fromarray(img)
