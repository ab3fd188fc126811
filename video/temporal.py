"""Temporal initialisation of new Jacobi window positions on a clip's token grids.

Speculative Jacobi decoding (Teng et al. 2024) starts each new window position from a random token. In a
clip most of a frame repeats the previous frame (static background, a shape that moves a little), so a new
position starts from the token at the same place one frame earlier (``temporal-repeat``) or from a token
drawn from its 3x3 neighbourhood there (``temporal-sample``, which covers motion of up to one token). In the
first frame there is no earlier frame: the image modality's spatial initialisations
(:mod:`mmaccel.drafting.grid_init`, inside the frame's grid) fill it, ``vertical`` (the token above, else the
last known one) unless the init's name says otherwise (``temporal-repeat+horizontal-sample``). The spatial
inits also exist alone (``vertical``, ``horizontal``, ``horizontal-sample``) for comparison.

Each init is a callable with the drafter's hook signature (:class:`~mmaccel.drafting.jacobi.WindowInit`)::

    init(context [B, N], index [B, K], uniforms [B, K]) -> tokens [B, K]

``context[b, i]`` holds generated token ``i`` for every ``i < index[b, 0]``; ``index`` is contiguous.
When the window reaches past the known tokens (K larger than a frame), the source is taken as many frames
back as needed to land on a known token, so the result never reads an undefined entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mmaccel.drafting.grid_init import GridInit, HorizontalRepeat, HorizontalSample, SpatialInit, VerticalRepeat

from .layout import VideoLayout

#: The image modality's spatial inits, used inside the first frame (and on their own), by name.
SPATIAL_INITS: dict[str, Callable[[int, int], SpatialInit]] = {
    "vertical": lambda vocab, width: VerticalRepeat(vocab, width),
    "horizontal": lambda vocab, width: HorizontalRepeat(vocab, width),
    "horizontal-sample": lambda vocab, width: HorizontalSample(vocab, width),
}
DEFAULT_FIRST_FRAME = "vertical"


class TemporalInit(GridInit):
    """The previous-frame source of each position (subclasses choose it); a spatial init where there is none.

    ``layout`` is a :class:`~mmaccel.video.layout.VideoLayout` or any layout with ``frame_tokens``,
    ``num_tokens`` and ``row_tokens`` (frames with separators, as Emu3's); ``temporal-sample`` needs (t, h, w)
    positions and so a ``VideoLayout``."""

    def __init__(self, layout: VideoLayout | Any, vocab: int, first_frame: str = DEFAULT_FIRST_FRAME):
        if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
            raise ValueError(f"vocab must be an integer >= 1, got {vocab!r}")
        if first_frame not in SPATIAL_INITS:
            raise ValueError(f"first_frame must be one of {', '.join(SPATIAL_INITS)}, got {first_frame!r}")
        self.layout = layout
        self.vocab = vocab
        # Rows of the flat sequence are the frame's rows (with a separator layout, a row's slots: row_tokens).
        self.spatial = SPATIAL_INITS[first_frame](vocab, layout.row_tokens)

    def fill(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        start = index[:, :1]
        # Positions past the clip (the engine may draft beyond the end) are clamped; their tokens are unused.
        idx = index.clamp(max=self.layout.num_tokens - 1)
        source = self.source(idx, start, uniforms)
        known = (source >= 0) & (source < start)
        gathered = context.gather(1, source.clamp(0, max(context.shape[1] - 1, 0))) if context.shape[1] else source
        return torch.where(known, gathered, self.spatial.fill(context, index, uniforms))

    def frames_back(self, idx: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """How many frames back from ``idx`` the nearest known frame is (>= 1)."""
        return (idx - start) // self.layout.frame_tokens + 1

    def source(self, idx: torch.Tensor, start: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TemporalRepeat(TemporalInit):
    """Copy the token at the same (row, column) of the nearest earlier known frame."""

    def source(self, idx: torch.Tensor, start: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        return idx - self.layout.frame_tokens * self.frames_back(idx, start)


class TemporalSample(TemporalInit):
    """Draw one token of the 3x3 neighbourhood (clipped to the frame) in the nearest earlier known frame.

    The draw uses the position's own uniform number, so it follows the per-sample generators.
    """

    def source(self, idx: torch.Tensor, start: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        t, h, w = lay.position(idx)
        pick = (uniforms * 9).long().clamp(max=8)
        dh, dw = pick // 3 - 1, pick % 3 - 1
        h = (h + dh).clamp(0, lay.height - 1)
        w = (w + dw).clamp(0, lay.width - 1)
        return lay.index(t - self.frames_back(idx, start), h, w)


TEMPORAL_INITS: dict[str, type[TemporalInit]] = {"temporal-repeat": TemporalRepeat, "temporal-sample": TemporalSample}


def init_names() -> tuple[str, ...]:
    """Every video init name: random, the spatial inits, the temporal inits, and temporal+spatial pairs."""
    pairs = [f"{t}+{s}" for t in TEMPORAL_INITS for s in SPATIAL_INITS]
    return ("random", *SPATIAL_INITS, *TEMPORAL_INITS, *pairs)


def video_inits(layout: VideoLayout, vocab: int) -> dict[str, Callable[[], GridInit]]:
    """The video Jacobi inits by name, for :func:`mmaccel.methods.build_decoder`'s ``inits``."""
    inits: dict[str, Callable[[], GridInit]] = {
        name: (lambda make=make: make(vocab, layout.width)) for name, make in SPATIAL_INITS.items()
    }
    for name, cls in TEMPORAL_INITS.items():
        inits[name] = lambda cls=cls: cls(layout, vocab)
        for spatial in SPATIAL_INITS:
            inits[f"{name}+{spatial}"] = lambda cls=cls, spatial=spatial: cls(layout, vocab, spatial)
    return inits
