"""Tiny random video models for tests (no weights needed)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from mmaccel.models.slot_llama import with_slots
from mmaccel.models.vq import VQConfig, VQModel

from ..model import save_video_gpt, sink_token_id, video_config


def save_tiny_video_model(
    folder: Path, frames: int = 2, grid: int = 4, num_classes: int = 3, seed: int = 0, sink: bool = False,
    cell_slots: bool = False,
) -> Path:
    """A random ``video-tiny`` GPT and a random ``VQ-tiny`` tokenizer (2x downsampling) saved into ``folder``;
    ``sink``: with a sink token before the class token (``train_gpt --sink``); ``cell_slots``: a
    :class:`~mmaccel.models.slot_llama.SlotLlama` with a random cell table, so every logit depends on the cell."""
    torch.manual_seed(seed)
    vq = VQModel(VQConfig.named("VQ-tiny"))
    vq.save_pretrained(folder, "vq")
    k = vq.config.codebook_size
    config = video_config("video-tiny", k, num_classes, frames * grid * grid)
    if sink:
        config.vocab_size += 1
        config.max_position_embeddings += 1
    model = LlamaForCausalLM(config)
    if cell_slots:
        model = with_slots(model, grid * grid, 1 + sink)
        torch.nn.init.normal_(model.slots.weight, std=1.0)
    meta = {"codebook_size": k, "num_classes": num_classes, "frames": frames, "grid": grid,
            "resolution": grid * vq.config.downsample, "sink_token": sink_token_id(k, num_classes) if sink else None}
    save_video_gpt(model, meta, folder)
    return folder
