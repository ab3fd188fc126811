"""A Llama decoder with a learned embedding of each token's slot in a periodic layout.

Token layouts of the modalities repeat with a period: a mesh face is 9 coordinates (corner, axis), a video frame is
``grid x grid`` cells. Rotary positions say how far apart two tokens are, not where in the period a token sits, and
every slot shares one vocabulary, so a plain decoder has to work the slot out from its context. :class:`SlotLlama`
adds the slot's embedding to the token's: PolyGen's coordinate-type embedding (Nash et al. 2020), MeshAnything V2's
``token_embed_positions``, and for a frame grid the learned 2-D position of LlamaGen-style image GPTs' cells.

The slot is a function of the position alone, so a verify window or a tree node gets its slot from the position
the engine gives it, and every method of the core runs on the model unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from mmaccel.checkpoint import CheckpointError


def slot_of(positions: torch.Tensor, period: int, offset: int) -> torch.Tensor:
    """Each position's slot: ``(p - offset) % period`` from ``offset`` on, ``period`` for the ``offset`` prompt
    positions before it."""
    return torch.where(positions < offset, period, (positions - offset) % period)


class SlotLlama(LlamaForCausalLM):
    """``LlamaForCausalLM`` whose input embedding adds a learned embedding of the token's slot
    (:func:`slot_of` with the config's ``slot_period`` and ``slot_offset``).

    The table starts at zero, so a plain decoder's weights load into it unchanged and compute the same logits
    (:func:`with_slots`): the table is then trained from there.
    """

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.slot_period, self.slot_offset = int(config.slot_period), int(config.slot_offset)
        self.slots = nn.Embedding(self.slot_period + 1, config.hidden_size)
        nn.init.zeros_(self.slots.weight)

    def slot(self, positions: torch.Tensor) -> torch.Tensor:
        return slot_of(positions, self.slot_period, self.slot_offset)

    def forward(self, input_ids=None, position_ids=None, inputs_embeds=None, cache=None, **kwargs):
        if inputs_embeds is None and input_ids is not None:
            if position_ids is None:
                past = kwargs.get("cache_position")
                position_ids = (
                    past[None].expand_as(input_ids)
                    if past is not None
                    else torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
                )
            inputs_embeds = self.get_input_embeddings()(input_ids) + self.slots(self.slot(position_ids))
            input_ids = None
        return super().forward(
            input_ids=input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds, cache=cache, **kwargs
        )


def is_slot_config(config: LlamaConfig) -> bool:
    return getattr(config, "slot_period", None) is not None


def check_slot_layout(config: LlamaConfig, period: int, offset: int, where: str, layout: str) -> None:
    """Raise :class:`~mmaccel.checkpoint.CheckpointError` naming ``where`` when ``config`` has slots of another
    layout than ``period`` from position ``offset`` (``layout`` says whose: "the face layout")."""
    if is_slot_config(config) and (config.slot_period, config.slot_offset) != (period, offset):
        raise CheckpointError(
            f"{where}: slots of period {config.slot_period} from position {config.slot_offset}, not {layout}'s "
            f"{period} from {offset}"
        )


def new_llama(config: LlamaConfig) -> LlamaForCausalLM:
    """A randomly initialised decoder of ``config``: a :class:`SlotLlama` where the config has ``slot_period``."""
    return SlotLlama(config) if is_slot_config(config) else LlamaForCausalLM(config)


def with_slots(model: LlamaForCausalLM, period: int, offset: int) -> SlotLlama:
    """``model``'s weights in a :class:`SlotLlama` of this layout, its table at zero (the same logits). A model
    that has slots already is returned as it is when its layout is this one."""
    if isinstance(model, SlotLlama):
        if (model.slot_period, model.slot_offset) != (period, offset):
            raise ValueError(
                f"the model has slots of period {model.slot_period} from position {model.slot_offset}, "
                f"not {period} from {offset}"
            )
        return model
    config = LlamaConfig(**{**model.config.to_dict(), "slot_period": period, "slot_offset": offset})
    out = SlotLlama(config)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    if unexpected or missing != ["slots.weight"]:
        raise ValueError(f"not a plain Llama decoder: missing {missing}, unexpected {unexpected}")
    return out.train(model.training)
