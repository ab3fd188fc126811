"""Tiny random configurations of the real model classes, with small fake prompts."""

from __future__ import annotations

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    SiglipVisionConfig,
)

VOCAB = 96
IMAGE, VIDEO = 90, 91
LAYERS = 4


def _text(cls, **extra):
    return cls(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **extra,
    )


def tiny_llava(seed: int = 0) -> LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=32,
            patch_size=4,
            projection_dim=32,
        ),
        text_config=_text(LlamaConfig),
        image_token_id=IMAGE,
    )
    config._attn_implementation = "sdpa"
    return LlavaForConditionalGeneration(config).eval()


def tiny_onevision(seed: int = 0) -> LlavaOnevisionForConditionalGeneration:
    torch.manual_seed(seed)
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        text_config=_text(Qwen2Config),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        image_grid_pinpoints=[[32, 32]],
        vision_feature_layer=-1,
    )
    config._attn_implementation = "sdpa"
    return LlavaOnevisionForConditionalGeneration(config).eval()


def _qwen_text_config() -> dict:
    """The language model shared by the tiny Qwen2-VL and Qwen2.5-VL (3-D M-RoPE sections)."""
    return {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
    }


def tiny_qwen2vl(seed: int = 0) -> Qwen2VLForConditionalGeneration:
    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 4,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "in_channels": 3,
        },
        text_config=_qwen_text_config(),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=92,
    )
    config._attn_implementation = "sdpa"
    return Qwen2VLForConditionalGeneration(config).eval()


def tiny_qwen25vl(seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 32,
            "patch_size": 4,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "in_channels": 3,
            "window_size": 16,
            "fullatt_block_indexes": [1],
        },
        text_config=_qwen_text_config(),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=92,
    )
    config._attn_implementation = "sdpa"
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _ids(prefix: list[int], visual: list[int], suffix: list[int]) -> torch.Tensor:
    return torch.tensor(prefix + visual + suffix)


def llava_inputs(batch: int = 1, seed: int = 0, suffix_lengths=None) -> dict:
    """Prompts `text <image>*64 text`, left-padded when suffix lengths differ."""
    g = torch.Generator().manual_seed(seed)
    suffix_lengths = suffix_lengths or [5] * batch
    rows = [_ids([1, 5, 6], [IMAGE] * 64, torch.randint(3, 80, (n,), generator=g).tolist()) for n in suffix_lengths]
    ids, mask = _left_pad(rows)
    pixels = torch.randn(batch, 3, 32, 32, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def onevision_image_inputs(batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    # One 32x32 tile at pinpoint 32x32: base tile + 1 tile; 4x4 patches each, unpadded with newlines.
    model_tokens = 16 + 4 * 5  # base (16) + grid tile 4 rows x (4 + newline)
    rows = [
        _ids([1, 5], [IMAGE] * model_tokens, torch.randint(3, 80, (4,), generator=g).tolist()) for _ in range(batch)
    ]
    ids, mask = _left_pad(rows)
    pixels = torch.randn(batch, 2, 3, 32, 32, generator=g)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        "image_sizes": torch.tensor([[32, 32]] * batch),
    }


def onevision_video_inputs(batch: int = 1, seed: int = 0, frames: int = 6) -> dict:
    g = torch.Generator().manual_seed(seed)
    tokens = frames * 4 + 1  # 4x4 patches pooled to 2x2 per frame, one newline per video
    rows = [_ids([1, 5], [VIDEO] * tokens, torch.randint(3, 80, (4,), generator=g).tolist()) for _ in range(batch)]
    ids, mask = _left_pad(rows)
    base = torch.randn(batch, 1, 3, 32, 32, generator=g)
    videos = base + 0.05 * torch.randn(batch, frames, 3, 32, 32, generator=g)  # mostly static frames
    return {"input_ids": ids, "attention_mask": mask, "pixel_values_videos": videos}


def qwen_inputs(batch: int = 1, seed: int = 0, video: bool = False, suffix_lengths=None) -> dict:
    """Images 16x16 pixels -> 4x4 patches -> 2x2 merged = 4 tokens... use 32x32: 8x8 patches -> 16 tokens."""
    g = torch.Generator().manual_seed(seed)
    suffix_lengths = suffix_lengths or [4] * batch
    token = VIDEO if video else IMAGE
    t = 2 if video else 1  # temporal grid (frames / temporal_patch_size)
    per = 16 * t
    rows = [
        _ids([1, 92], [token] * per, [93] + torch.randint(3, 80, (n,), generator=g).tolist()) for n in suffix_lengths
    ]
    ids, mask = _left_pad(rows)
    patches = per * 4  # 2x2 patches per merged token
    flat = torch.randn(batch * patches, 3 * 2 * 4 * 4, generator=g)
    grid = torch.tensor([[t, 8, 8]] * batch)
    mm = (ids == token).long() * (2 if video else 1)
    out = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": mm}
    if video:
        out.update(pixel_values_videos=flat, video_grid_thw=grid)
    else:
        out.update(pixel_values=flat, image_grid_thw=grid)
    return out


def _left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return ids, mask
