"""Draft heads that keep their drafts inside the mesh layout's grammar and sort order (mesh's own).

The heads' distributions ``q`` are masked before the drafts are drawn from them:

* inside a face (slots 1-8 of its 9 tokens) only coordinate tokens; at a face boundary (slot 0) a coordinate or
  ``eos``; after an ``eos`` only ``eos``;
* sort order: a face's first vertex is never below the previous face's (faces are sorted by their lowest
  vertex, z most significant), so at slot 0 a z below the last committed face's first z is masked.

The drafts are drawn from the masked, renormalised ``q`` and the rule is handed that same ``q``, so the exact rule
stays lossless; the mask only stops drafts the target would reject anyway.
"""

from __future__ import annotations

import torch

from mmaccel.drafting.heads import DraftHeads, MultiHeadDrafter
from mmaccel.drafting.jacobi import WindowInit
from mmaccel.sampling import target_probs

from .tokenizer import TOKENS_PER_FACE


class StructuredHeadsDrafter(MultiHeadDrafter):
    """:class:`~mmaccel.drafting.heads.MultiHeadDrafter` with the layout mask above (``levels`` coordinate bins)."""

    def __init__(
        self,
        heads: DraftHeads,
        levels: int,
        eos: int,
        hint: WindowInit | None = None,
        tree: str | None = None,
        branch: str | None = None,
        tail: WindowInit | None = None,
        tail_length: int = 0,
    ):
        super().__init__(heads, tree=tree, branch=branch, hint=hint, tail=tail, tail_length=tail_length)
        self.levels, self.eos = levels, eos

    def allowed(self, generated: torch.Tensor, count: torch.Tensor, vocab: int) -> torch.Tensor:
        """``[B, K, V]`` which tokens head ``k``'s draft (generated index ``count + k``) may be."""
        k = self.heads.num_heads
        index = count[:, None] + torch.arange(k, device=count.device)
        slot = index % TOKENS_PER_FACE
        token = torch.arange(vocab, device=count.device)
        coordinate = token < self.levels
        span = torch.arange(generated.shape[1], device=count.device)[None]
        ended = ((generated == self.eos) & (span < count[:, None])).any(1)
        last_face = (count - 1) // TOKENS_PER_FACE * TOKENS_PER_FACE
        z_last = generated.gather(1, last_face[:, None]).clamp(max=self.levels - 1)  # [B, 1]
        boundary = (slot == 0)[..., None]
        at_boundary = (coordinate & (token[None, None] >= z_last[..., None])) | (token == self.eos)
        allowed = torch.where(boundary, at_boundary, coordinate.expand(1, 1, -1))
        return torch.where(ended[:, None, None], token == self.eos, allowed)

    def _draft(self, state, hidden: torch.Tensor) -> None:
        q = target_probs(self.logits(state, hidden), self.sampling or state.sampling)
        allowed = self.allowed(state.generated, state.count, q.shape[-1])
        masked = q * allowed
        # All of q's mass on forbidden tokens: draw uniformly among the allowed ones instead.
        empty = masked.sum(-1, keepdim=True) <= 0
        masked = torch.where(empty, allowed.float(), masked)
        self._q = masked / masked.sum(-1, keepdim=True)
        self._pick_chain(state)
