"""Adapter that drives any Hugging Face causal LM through the :class:`TokenModel` contract."""

from __future__ import annotations

import inspect

import torch
from transformers import PreTrainedModel

from .base import ModelOutput, TokenPrompt, gather_last
from .cache import SlotCache


class HFCausalLM:
    """Wrap a ``transformers`` causal LM (Llama, Qwen2, Mistral, ...) for the speculative engine.

    The model runs with its own attention implementation (SDPA by default); the engine's per-sample positions
    arrive as ``position_ids`` and a 4-D additive mask over a :class:`SlotCache`.
    """

    def __init__(self, model: PreTrainedModel):
        self.model = model.eval()
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        # transformers 5 renames `past_key_values` to `cache`; older model classes still take the old name.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def new_cache(self, batch_size: int, max_length: int) -> SlotCache:
        return SlotCache(max_length)

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput:
        cache.set_positions(positions)
        out = self.model(
            input_ids=tokens,
            position_ids=positions,
            attention_mask=cache.attention_mask(positions, self.dtype),
            **{self._cache_arg: cache},
            use_cache=True,
            output_hidden_states=output_hidden,
        )
        hidden = out.hidden_states[-1] if output_hidden else None
        return ModelOutput(out.logits.float(), hidden)

    def prefill(self, prompt: TokenPrompt, cache: SlotCache, output_hidden: bool = False) -> ModelOutput:
        ids = prompt.ids.to(self.device)
        # Padding gets positions past each prompt's end; those slots are rewritten by the first step.
        positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
        out = self.forward(ids, positions, cache, output_hidden)
        hidden = gather_last(out.hidden, prompt.lengths) if output_hidden else None
        return ModelOutput(gather_last(out.logits, prompt.lengths), hidden)

    def embedding_table(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight.detach()
