"""Where each generated token of a clip sits: frame-major, raster order inside a frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VideoLayout:
    """``frames`` token grids of ``height`` x ``width``, frame after frame, rows top to bottom.

    Generated token ``i`` is frame ``i // (height * width)``, row ``(i % (height * width)) // width``,
    column ``i % width``.
    """

    frames: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VideoLayout.{name} must be an integer >= 1, got {value!r}")

    @property
    def frame_tokens(self) -> int:
        return self.height * self.width

    @property
    def row_tokens(self) -> int:
        """Slots of one row (no separators here: the width)."""
        return self.width

    @property
    def num_tokens(self) -> int:
        return self.frames * self.frame_tokens

    def position(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat generated-token indices (any shape) -> (t, h, w) tensors of the same shape."""
        index = torch.as_tensor(index)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_tokens):
            raise ValueError(f"index must lie in [0, {self.num_tokens}), got range [{int(index.min())}, {int(index.max())}]")
        t, rest = index // self.frame_tokens, index % self.frame_tokens
        return t, rest // self.width, rest % self.width

    def index(self, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(t, h, w) -> flat indices (inverse of :meth:`position`)."""
        return (torch.as_tensor(t) * self.height + torch.as_tensor(h)) * self.width + torch.as_tensor(w)

    def grids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N]`` -> ``[B, frames, height, width]`` (a view)."""
        if tokens.dim() != 2 or tokens.shape[1] != self.num_tokens:
            raise ValueError(f"tokens must be [batch, {self.num_tokens}], got shape {tuple(tokens.shape)}")
        return tokens.view(tokens.shape[0], self.frames, self.height, self.width)

    def acceptance_maps(self, accept_step: torch.Tensor) -> torch.Tensor:
        """The engine's ``accept_step`` ``[B, N]`` (forward that accepted each token) -> ``[B, T, H, W]``."""
        return self.grids(accept_step)

    def frame_steps(self, accept_step: torch.Tensor) -> torch.Tensor:
        """``[B, T]``: forwards spent on each frame (the frame's last accepting forward minus the previous one's)."""
        last = self.grids(accept_step).flatten(2).amax(2)
        prev = torch.cat([torch.zeros_like(last[:, :1]), last[:, :-1]], 1)
        return last - prev
