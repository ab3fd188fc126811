"""Adapter that drives any Hugging Face causal LM through the :class:`TokenModel` contract."""

from __future__ import annotations

import functools
import inspect

import torch
from transformers import PreTrainedModel

from .base import ModelOutput, TokenPrompt, gather_last
from .cache import SlotCache


@torch.compiler.assume_constant_result
@functools.cache
def _cache_argument(model_class: type) -> str:
    # transformers 5 renames `past_key_values` to `cache`; older model classes still take the old name.
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def slot_forward(model: PreTrainedModel, positions: torch.Tensor, cache: SlotCache, **inputs):
    """Call a ``transformers`` model on ``inputs`` (``input_ids`` or ``inputs_embeds``, ...) whose tokens sit at
    per-sample ``positions`` ``[B, T]`` of a :class:`SlotCache`; returns the model's own output.

    Shared by :class:`HFCausalLM` and adapters that embed or score tokens themselves (Janus-Pro's image head).
    """
    cache.set_positions(positions)
    return model(
        position_ids=positions,
        attention_mask=cache.attention_mask(positions, model.dtype),
        **{_cache_argument(type(model)): cache},
        use_cache=True,
        **inputs,
    )


class HFCausalLM:
    """Wrap a ``transformers`` causal LM (Llama, Qwen2, Mistral, ...) for the speculative engine.

    The model runs with its own attention implementation (SDPA by default); the engine's per-sample positions
    arrive as ``position_ids`` and a 4-D additive mask over a :class:`SlotCache`.
    """

    def __init__(self, model: PreTrainedModel):
        self.model = model.eval()
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])

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
        out = slot_forward(self.model, positions, cache, input_ids=tokens, output_hidden_states=output_hidden)
        hidden = out.hidden_states[-1] if output_hidden else None
        return ModelOutput(out.logits.float(), hidden)

    def prefill(self, prompt: TokenPrompt, cache: SlotCache, output_hidden: bool = False) -> ModelOutput:
        prompt.check_vocab(int(self.model.get_input_embeddings().weight.shape[0]))
        ids = prompt.ids.to(self.device)
        # Padding gets positions past each prompt's end; those slots are rewritten by the first step.
        positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
        out = self.forward(ids, positions, cache, output_hidden)
        hidden = gather_last(out.hidden, prompt.lengths) if output_hidden else None
        return ModelOutput(gather_last(out.logits, prompt.lengths), hidden)

    def embedding_table(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight.detach()
