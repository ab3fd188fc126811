"""Face-structure initialisation of new Jacobi window positions (mesh's own, any rule verifies it).

In the sorted layout (:mod:`mmaccel.mesh.tokenizer`) consecutive faces usually share vertices: faces are sorted
by their lowest vertex, so neighbours in the sequence fan around the same first vertex, and a fan's next face
starts where the last one ended, ``(a, b, c)`` then ``(a, c, d)``. So a new window position starts as:

* vertex 0 of a face: the previous face's vertex 0 (same fan centre), which also keeps the draft inside the sort
  order (a face's first vertex is never below the previous face's);
* vertex 1: the previous face's vertex 2 (the shared edge of a fan);
* vertex 2: the previous face's vertex 2 (a guess; the next corner is new).

Coordinates of the first face, which has no predecessor, are drawn uniformly from the coordinate bins. After an
``eos`` every new position is ``eos`` (the sequence has ended; the model writes ``eos`` there).

Layout: generated token ``i`` is coordinate ``i % 3`` of vertex ``(i % 9) // 3`` of face ``i // 9`` (the prompt
``[class, bos]`` comes before generated token 0).
"""

from __future__ import annotations

import torch

from .tokenizer import TOKENS_PER_FACE

#: Where each of a face's 9 slots copies from, as an offset back into the previous face.
_SOURCE_OFFSET = torch.tensor([9, 9, 9, 6, 6, 6, 9, 9, 9])


class FaceInit:
    """The drafter hook ``init(context [B, N], index [B, K], uniforms [B, K]) -> tokens [B, K]``.

    ``levels`` is the number of coordinate bins (ids ``0 .. levels-1``); ``eos`` the end token.
    """

    def __init__(self, levels: int, eos: int):
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.levels = levels
        self.eos = eos

    def source(self, index: torch.Tensor) -> torch.Tensor:
        """The generated-token index each of ``index`` copies from (negative: none, the first face)."""
        return index - _SOURCE_OFFSET.to(index.device)[index % TOKENS_PER_FACE]

    def __call__(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        if context.dim() != 2 or index.dim() != 2 or index.shape != uniforms.shape:
            raise ValueError("context must be [B, N]; index and uniforms [B, K] alike")
        start = index[:, :1]
        src = self.source(index)
        # A source inside this very fill is itself a copy: follow the chain back to a known token. Each hop goes
        # back >= 6 positions, so K // 6 + 1 hops reach one (a bounded loop over hops, not over tokens).
        for _ in range(index.shape[1] // 6 + 1):
            inside = src >= start
            if not bool(inside.any()):
                break
            src = torch.where(inside, self.source(src), src)
        known = src >= 0
        copied = context.gather(1, src.clamp(min=0, max=context.shape[1] - 1))
        random = (uniforms * self.levels).long().clamp_(max=self.levels - 1)
        tokens = torch.where(known, copied, random)
        span = torch.arange(context.shape[1], device=context.device)[None]
        ended = ((context == self.eos) & (span < start)).any(1, keepdim=True)
        # A copied eos (or other non-coordinate token) inside a face is no guess of a coordinate.
        tokens = torch.where(tokens >= self.levels, random, tokens)
        return torch.where(ended, torch.full_like(tokens, self.eos), tokens)
