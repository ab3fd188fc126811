"""Acceptance maps: each grid cell coloured by the forward pass that accepted its token, with a legend.

A thin line separates cells accepted at different forwards, so each run of tokens that one forward accepted reads
as one outlined block (plain AR outlines every cell); a colour bar under the map gives the forward of each colour.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Anchors of the viridis colour map, enough for a smooth ramp without matplotlib.
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)
#: Narrower cells would be mostly line: a wide grid (Emu3's 90 codes a row) widens the map instead.
MIN_CELL_PX = 4
LINE = (255, 255, 255)
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
_PAD, _BAR_PX, _GAP = 4, 10, 2
# The longest caption that fits between the end labels is drawn.
_CAPTIONS = ("forward that accepted the token (0 = prompt)", "accepting forward (0 = prompt)", "forward")


def colourise(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB along the viridis ramp."""
    x = np.clip(values, 0, 1) * (len(_ANCHORS) - 1)
    lo = np.floor(x).astype(int).clip(max=len(_ANCHORS) - 2)
    frac = (x - lo)[..., None]
    return (_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).round().astype(np.uint8)


def acceptance_map(
    accept_step: torch.Tensor,
    grid: tuple[int, int],
    size: int = 256,
    max_step: int | None = None,
    *,
    lines: bool = True,
    legend: bool = True,
) -> Image.Image:
    """A PIL image of one sample's ``accept_step`` ``[N]`` over an ``(h, w)`` grid (early = dark, late = yellow).

    The map is ``size`` pixels wide (wider when cells would be under :data:`MIN_CELL_PX` with ``lines``) and
    ``width * h // w`` high; the ``legend`` strip below it adds the colour bar from forward 0 to the top of the scale.
    ``max_step`` fixes the colour scale (e.g. the AR step count) so maps of different methods compare.
    """
    h, w = grid
    steps = accept_step.detach().cpu().float().numpy()[: h * w].reshape(h, w)
    top = float(max_step if max_step is not None else max(steps.max(), 1))
    width = max(size, MIN_CELL_PX * w) if lines else size
    height = width * h // w
    rows = np.arange(height) * h // height
    cols = np.arange(width) * w // width
    pixel_steps = steps[rows[:, None], cols[None, :]]
    rgb = colourise(pixel_steps / top)
    if lines:
        rgb[run_edges(rows, cols, pixel_steps)] = LINE
    image = Image.fromarray(rgb)
    return with_legend(image, top) if legend else image


def run_edges(rows: np.ndarray, cols: np.ndarray, pixel_steps: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: the first pixel row / column of each cell whose neighbour above / to the left was accepted at
    another forward (``rows`` / ``cols`` give each pixel's cell, ``pixel_steps`` its accepting forward)."""
    edges = np.zeros(pixel_steps.shape, dtype=bool)
    new_col = cols[1:] != cols[:-1]
    new_row = rows[1:] != rows[:-1]
    edges[:, 1:] |= new_col[None, :] & (pixel_steps[:, 1:] != pixel_steps[:, :-1])
    edges[1:, :] |= new_row[:, None] & (pixel_steps[1:] != pixel_steps[:-1])
    return edges


def with_legend(image: Image.Image, top: float) -> Image.Image:
    """``image`` above a colour bar from forward 0 (left) to ``top`` (right), labelled at both ends."""
    font = ImageFont.load_default()
    width, height = image.size
    text_px = int(font.getbbox("0123456789()")[3])
    canvas = Image.new("RGB", (width, height + _PAD + _BAR_PX + _GAP + text_px + _PAD), BACKGROUND)
    canvas.paste(image, (0, 0))
    x0, x1 = _PAD, width - _PAD
    ramp = colourise(np.linspace(0.0, 1.0, max(x1 - x0, 2)))
    bar = np.ascontiguousarray(np.broadcast_to(ramp, (_BAR_PX, *ramp.shape)))
    canvas.paste(Image.fromarray(bar), (x0, height + _PAD))
    draw = ImageDraw.Draw(canvas)
    y = height + _PAD + _BAR_PX + _GAP
    left, right = "0", f"{top:g}"
    right_px = draw.textlength(right, font=font)
    draw.text((x0, y), left, fill=TEXT, font=font)
    draw.text((x1 - right_px, y), right, fill=TEXT, font=font)
    room = (x1 - right_px) - (x0 + draw.textlength(left, font=font)) - 2 * _PAD
    caption = next((c for c in _CAPTIONS if draw.textlength(c, font=font) <= room), None)
    if caption is not None:
        draw.text(((width - draw.textlength(caption, font=font)) / 2, y), caption, fill=TEXT, font=font)
    return canvas
