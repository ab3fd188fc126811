"""A unified text + vision transformers LM generating over its vision sub-vocabulary only.

Unified models (Emu3, Wang et al. 2024; Chameleon) hold text and VQ tokens in one vocabulary and write a
grid with separator tokens (end of line, end of frame). Generating over the whole vocabulary would let the
acceptance rules spend probability on text, and would ask them to sum over ~180k entries per draft. The adapter
here works on a *compact* vocabulary: ids ``0 .. n_codes - 1`` are the VQ codes, the next ids the separators;
``token_ids`` maps them to the model's own ids. Only those ``lm_head`` rows are multiplied, and a layout forces
the separators where they belong and forbids them elsewhere (no transformers logits processor is relied on).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from .base import ModelOutput, TokenPrompt, gather_last
from .cache import SlotCache
from .hf import HFCausalLM, slot_forward


class SeparatorLayout(Protocol):
    """Where separators sit among the generated tokens: ``forced(index)`` is the compact id forced at generated
    index ``index`` (any shape), or -1 where a code is generated; ``n_codes`` is the number of free ids."""

    n_codes: int

    def forced(self, index: torch.Tensor) -> torch.Tensor: ...


def force_layout(logits: torch.Tensor, index: torch.Tensor, layout: SeparatorLayout) -> torch.Tensor:
    """``logits [B, T, V]`` choosing generated tokens ``index [B, T]`` with the layout forced on them: a
    separator slot allows its separator only, a code slot the codes only. The floor is finite (not -inf):
    guidance subtracts two rows, and -inf - -inf is NaN while equal finite floors cancel."""
    forced = layout.forced(index)
    ids = torch.arange(logits.shape[-1], device=logits.device)
    allowed = torch.where(forced[..., None] >= 0, ids == forced[..., None], ids < layout.n_codes)
    floor = torch.finfo(logits.dtype).min
    return logits.masked_fill(~allowed, floor)


def far_rows(table: torch.Tensor, count: int) -> torch.Tensor:
    """``table [n, D]`` with ``count`` rows appended, each far from every row and from each other (one new
    dimension each), so that no code counts a separator as a nearby token (LANTERN, GSD)."""
    far = 10.0 * float(table.norm(dim=-1).max()) + 1.0
    padded = torch.nn.functional.pad(table.float(), (0, count))
    extra = torch.zeros(count, padded.shape[1], dtype=padded.dtype, device=padded.device)
    extra[:, table.shape[1] :] = far * torch.eye(count, dtype=padded.dtype, device=padded.device)
    return torch.cat([padded, extra])


class SubVocabLM(HFCausalLM):
    """A transformers causal LM over a compact vocabulary (see the module docstring), through a SlotCache.

    ``model`` is the full model (its ``lm_head`` and input embeddings are read); ``backbone`` the module that
    returns ``last_hidden_state`` (default ``model.model``: the full-vocabulary logits are never computed).
    ``uncond_ids`` is the guidance counterpart prompt (model ids). Prompts hold model ids.
    """

    def __init__(
        self,
        model: Any,
        token_ids: torch.Tensor,
        layout: SeparatorLayout,
        uncond_ids: list[int] | None = None,
        pad_id: int = 0,
        backbone: Any = None,
    ):
        super().__init__(model)
        self.token_ids = torch.as_tensor(token_ids).long()
        if self.token_ids.dim() != 1 or self.token_ids.numel() == 0:
            raise ValueError(
                f"token_ids must be a non-empty 1-D tensor of model ids, got {tuple(self.token_ids.shape)}"
            )
        rows = model.get_output_embeddings().weight.shape[0]
        if int(self.token_ids.max()) >= rows or int(self.token_ids.min()) < 0:
            raise ValueError(f"a compact token maps to id {int(self.token_ids.max())}, outside lm_head's {rows} rows")
        self.vocab_size = int(self.token_ids.numel())
        self.layout = layout
        self.uncond_ids = list(uncond_ids or [])
        self.pad_id = pad_id
        self.backbone = backbone if backbone is not None else model.model
        self._prompt_lengths: torch.Tensor | None = None
        self._head: torch.Tensor | None = None

    def compact_head(self) -> torch.Tensor:
        """``[vocab, D]``: the ``lm_head`` rows of the compact vocabulary, gathered once per device and dtype."""
        weight = self.model.get_output_embeddings().weight
        if self._head is None or self._head.device != weight.device or self._head.dtype != weight.dtype:
            self._head = weight.detach().index_select(0, self.token_ids.to(weight.device))
        return self._head

    def unconditional_prompt(self, prompt: TokenPrompt) -> TokenPrompt:
        if not self.uncond_ids:
            raise ValueError("this model has no unconditional prompt; give guidance_scale=1")
        return TokenPrompt.from_lists([self.uncond_ids] * prompt.batch_size, self.pad_id).to(prompt.ids.device)

    def _run(self, ids: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool) -> ModelOutput:
        hidden = slot_forward(self.backbone, positions, cache, input_ids=ids).last_hidden_state
        logits = torch.nn.functional.linear(hidden, self.compact_head()).float()
        # The logits at position t choose generated token t + 1 - prompt length.
        index = positions + 1 - self._prompt_lengths.to(positions.device)[:, None]
        return ModelOutput(self.constrain(logits, index), hidden if output_hidden else None)

    def constrain(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The layout forced on ``logits`` choosing generated tokens ``index`` (subclasses with another kind of
        layout override this)."""
        return force_layout(logits, index, self.layout)

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput:
        return self._run(self.token_ids.to(tokens.device)[tokens], positions, cache, output_hidden)

    @torch.no_grad()
    def prefill(self, prompt: TokenPrompt, cache: SlotCache, output_hidden: bool = False) -> ModelOutput:
        ids = prompt.ids.to(self.device)
        self._prompt_lengths = prompt.lengths.to(self.device)
        # Padding gets positions past each prompt's end; those slots are rewritten by the first step.
        positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
        out = self._run(ids, positions, cache, output_hidden)
        hidden = gather_last(out.hidden, prompt.lengths) if output_hidden else None
        return ModelOutput(gather_last(out.logits, prompt.lengths), hidden)

    def reorder(self, cache: SlotCache, rows: torch.Tensor) -> None:
        """Keep batch ``rows`` (finished samples leaving the batch): the cache and each row's prompt length."""
        cache.reorder(rows)
        self._prompt_lengths = self._prompt_lengths.index_select(0, rows.to(self.device))

    def embedding_table(self) -> torch.Tensor:
        """The input embeddings of the codes, with the separators placed far from them."""
        embed = self.model.get_input_embeddings().weight.detach()
        codes = embed.index_select(0, self.token_ids[: self.layout.n_codes].to(embed.device))
        return far_rows(codes, self.vocab_size - self.layout.n_codes)


__all__ = ["SeparatorLayout", "SubVocabLM", "far_rows", "force_layout"]
