"""Temporal initialisation of new Jacobi window positions on a clip's token grids.

Speculative Jacobi decoding (Teng et al. 2024) starts each new window position from a random token. In a
clip most of a frame repeats the previous frame (static background, a shape that moves a little), so a new
position starts from the token at the same place one frame earlier (``temporal-repeat``) or from a token
drawn from its 3x3 neighbourhood there (``temporal-sample``, which covers motion of up to one token). In the
first frame there is no earlier frame: the token above is used, then a uniformly random one.

Each init is a callable with the drafter's hook signature (as the image modality's spatial inits)::

    init(context [B, N], index [B, K], uniforms [B, K]) -> tokens [B, K]

``context[b, i]`` holds generated token ``i`` for every ``i < index[b, 0]``; ``index`` is contiguous.
When the window reaches past the known tokens (K larger than a frame), the source is taken as many frames
back as needed to land on a known token, so the result never reads an undefined entry.
"""

from __future__ import annotations

import torch

from .layout import VideoLayout


class TemporalInit:
    """Common checks and the first-frame fallback; subclasses choose the previous-frame source."""

    def __init__(self, layout: VideoLayout, vocab: int):
        if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
            raise ValueError(f"vocab must be an integer >= 1, got {vocab!r}")
        self.layout = layout
        self.vocab = vocab

    def __call__(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        if context.dim() != 2:
            raise ValueError(f"context must be [batch, N], got shape {tuple(context.shape)}")
        if index.dim() != 2 or index.shape[0] != context.shape[0]:
            raise ValueError(f"index must be [batch, K] with batch {context.shape[0]}, got {tuple(index.shape)}")
        if uniforms.shape != index.shape:
            raise ValueError(f"uniforms must have index's shape {tuple(index.shape)}, got {tuple(uniforms.shape)}")
        index = index.long()
        start = index[:, :1]
        # Positions past the clip (the engine may draft beyond the end) are clamped; their tokens are unused.
        idx = index.clamp(max=self.layout.num_tokens - 1)
        source = self.source(idx, start, uniforms)
        # First frame: the token above, as many rows up as needed to be known.
        w = self.layout.width
        above = idx - w * ((idx - start) // w + 1)
        source = torch.where(source >= 0, source, above)
        random = (uniforms * self.vocab).long().clamp(max=self.vocab - 1)
        known = (source >= 0) & (source < start)
        gathered = context.long().gather(1, source.clamp(0, max(context.shape[1] - 1, 0))) if context.shape[1] else random
        return torch.where(known, gathered, random)

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


def video_inits(layout: VideoLayout, vocab: int) -> dict:
    """The video Jacobi inits by name, for :func:`mmaccel.methods.build_decoder`'s ``inits``."""
    return {
        "temporal-repeat": lambda: TemporalRepeat(layout, vocab),
        "temporal-sample": lambda: TemporalSample(layout, vocab),
    }
