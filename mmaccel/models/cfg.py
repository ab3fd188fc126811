"""Classifier-free guidance as a model wrapper, so no model needs its own guidance code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import ModelOutput, TokenModel, reorder
from .cache import SlotCache


@dataclass
class GuidedPrompt:
    """A conditional prompt and its unconditional counterpart (same batch size, lengths may differ)."""

    cond: Any
    uncond: Any

    def __post_init__(self):
        if self.cond.batch_size != self.uncond.batch_size:
            raise ValueError("cond and uncond prompts must have the same batch size")

    @property
    def lengths(self) -> torch.Tensor:
        return self.cond.lengths

    @property
    def batch_size(self) -> int:
        return self.cond.batch_size

    def cat(self, other: GuidedPrompt) -> GuidedPrompt:
        return GuidedPrompt(self.cond.cat(other.cond), self.uncond.cat(other.uncond))


class CFGModel:
    """Classifier-free guidance: ``logits = u + scale * (c - u)`` with cond and uncond rows in one batch.

    Both rows of a sample always receive the same generated tokens; the uncond row sits at its own positions
    when its prompt length differs. ``interval=(start, end)`` applies guidance only to generated-token indices
    in ``[start, end)`` and uses the conditional logits elsewhere (guidance interval).
    """

    def __init__(self, model: TokenModel, scale: float, interval: tuple[int, int] | None = None):
        if scale < 0:
            raise ValueError(f"guidance_scale (the CFG scale) must be >= 0, got {scale}")
        self.model = model
        self.scale = float(scale)
        self.interval = interval
        self.vocab_size = model.vocab_size
        self._cond_len: torch.Tensor | None = None
        self._shift: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_cache(self, batch_size: int, max_length: int) -> SlotCache:
        return self.model.new_cache(2 * batch_size, max_length)

    def embedding_table(self) -> torch.Tensor:
        return self.model.embedding_table()

    def reorder(self, cache: SlotCache, rows: torch.Tensor) -> None:
        """Keep samples ``rows``: their cond rows and their uncond rows, which sit one batch further down."""
        batch = self._shift.shape[0]
        reorder(self.model, cache, torch.cat([rows, rows + batch]))
        self._cond_len = self._cond_len.index_select(0, rows.to(self._cond_len.device))
        self._shift = self._shift.index_select(0, rows.to(self._shift.device))

    def _prompts(self, prompt: Any) -> GuidedPrompt:
        if isinstance(prompt, GuidedPrompt):
            return prompt
        if hasattr(self.model, "unconditional_prompt"):
            return GuidedPrompt(prompt, self.model.unconditional_prompt(prompt))
        raise TypeError("CFGModel needs a GuidedPrompt, or a model with unconditional_prompt()")

    def max_prompt_length(self, prompt: Any) -> int:
        p = self._prompts(prompt)
        return int(torch.maximum(p.cond.lengths.max(), p.uncond.lengths.max()))

    def _guide(self, out: ModelOutput, positions: torch.Tensor) -> ModelOutput:
        c, u = out.logits.chunk(2)
        scale: float | torch.Tensor = self.scale
        if self.interval is not None:
            # The logits at position t choose the token at t + 1, i.e. generated token t + 1 - cond_len.
            index = positions + 1 - self._cond_len.to(positions.device)[:, None]
            inside = (index >= self.interval[0]) & (index < self.interval[1])
            scale = torch.where(inside, self.scale, 1.0)[..., None]
        # Where both rows agree (in particular where an adapter masked a token to -inf in both), the guided
        # logit is that value; the formula would give -inf - -inf = NaN there.
        logits = torch.where(c == u, c, u + scale * (c - u))
        hidden = out.hidden.chunk(2)[0] if out.hidden is not None else None
        return ModelOutput(logits, hidden)

    def prefill(self, prompt: Any, cache: SlotCache, output_hidden: bool = False) -> ModelOutput:
        p = self._prompts(prompt)
        self._cond_len = p.cond.lengths
        self._shift = (p.uncond.lengths - p.cond.lengths).to(self.device)
        out = self.model.prefill(p.cond.cat(p.uncond), cache, output_hidden)
        last = (p.cond.lengths - 1).to(self.device)[:, None]
        return self._guide(out, last)

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput:
        both_tokens = torch.cat([tokens, tokens])
        both_positions = torch.cat([positions, positions + self._shift[:, None]])
        return self._guide(self.model.forward(both_tokens, both_positions, cache, output_hidden), positions)
