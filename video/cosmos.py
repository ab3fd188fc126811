"""Cosmos-Predict1 autoregressive video models (NVIDIA 2025, "Cosmos World Foundation Model Platform for
Physical AI"): ``nvidia/Cosmos-1.0-Autoregressive-4B`` / ``-12B`` (video-to-world over Cosmos DV8x16x16 tokens).

transformers has no class for them (its ``cosmos3_omni`` / ``cosmos3_edge`` are Qwen3-VL-based understanding
models, not token-AR video generators), so the official network is rebuilt from transformers parts. It is a
Llama-like decoder (RMSNorm, SwiGLU, grouped-query attention) with, per the official
``cosmos1/models/autoregressive`` code:

* QK normalisation (``use_qk_normalization``: RMSNorm over each head before RoPE): transformers' Qwen3
  attention does exactly that, so the network is a ``Qwen3ForCausalLM`` (a ``LlamaForCausalLM`` without it);
* 3-D RoPE (``rope_dim="3D"``, the TransformerEngine half-split convention of ``RotaryPositionEmbeddingPytorchV2``):
  of each head's ``head_dim`` channels, ``dim_h = head_dim // 6 * 2`` rotate with the row, as many with the column
  and the rest with the latent frame, token ``p`` sitting at ``(t, h, w)`` of ``video_latent_shape``; a module in
  place of the model's ``rotary_emb`` computes these cos/sin from the positions the engine passes;
* a 3-D sin-cos absolute embedding added before every block when ``apply_abs_pos_emb`` is set
  (``SinCosPosEmbAxisTE``), done by a pre-hook on each decoder layer.

Checkpoints load unchanged: the official parameter names (``tok_embeddings``, ``layers.N.attention.wq`` ...,
``feed_forward.w1/w2/w3``, ``attention_norm``, ``ffn_norm``, ``norm``, ``output``) are mapped to the transformers
modules in memory; ``model.pt`` is read with ``weights_only=True``, ``model.safetensors`` too. The folder's
``config.json`` holds the official ``ModelConfig`` field names. YaRN (the 12B's RoPE extension) is refused with
a clear error. The DV8x16x16 tokenizer ships only as TorchScript (``encoder.jit`` / ``decoder.jit``), which this
library does not execute: the token model is supported, pixels are the user's TorchScript step.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict
from mmaccel.models import HFCausalLM, TokenPrompt

CHECKPOINTS = ("nvidia/Cosmos-1.0-Autoregressive-4B", "nvidia/Cosmos-1.0-Autoregressive-12B")
#: The official architecture of the 4B (cosmos1 ``COSMOS_ARCHITECTURES["4b"]`` with ``BASE_CONFIG``) and the
#: video-to-world defaults; a folder's config.json overrides any of them.
DEFAULTS: dict[str, Any] = {
    "dim": 4096, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "head_dim": None, "ffn_hidden_size": 14336,
    "norm_type": "rmsnorm", "norm_eps": 1e-5, "vocab_size": 64000, "rope_theta": 10000.0, "rope_dim": "3D",
    "video_latent_shape": [5, 40, 64], "use_qk_normalization": True, "apply_abs_pos_emb": False,
    "apply_yarn": False, "max_seq_len": 12864,
}  # fmt: skip
WEIGHT_FILES = ("model.safetensors", "model.pt")

# Official name -> transformers name (inside ``model.``); the head and the final norm are outside the layers.
_RENAMES = [
    (r"^tok_embeddings\.", "model.embed_tokens."),
    (r"^norm\.", "model.norm."),
    (r"^output\.", "lm_head."),
    (r"^layers\.(\d+)\.attention\.wq\.", r"model.layers.\1.self_attn.q_proj."),
    (r"^layers\.(\d+)\.attention\.wk\.", r"model.layers.\1.self_attn.k_proj."),
    (r"^layers\.(\d+)\.attention\.wv\.", r"model.layers.\1.self_attn.v_proj."),
    (r"^layers\.(\d+)\.attention\.wo\.", r"model.layers.\1.self_attn.o_proj."),
    (r"^layers\.(\d+)\.attention\.q_norm\.", r"model.layers.\1.self_attn.q_norm."),
    (r"^layers\.(\d+)\.attention\.k_norm\.", r"model.layers.\1.self_attn.k_norm."),
    (r"^layers\.(\d+)\.feed_forward\.w1\.", r"model.layers.\1.mlp.gate_proj."),
    (r"^layers\.(\d+)\.feed_forward\.w3\.", r"model.layers.\1.mlp.up_proj."),
    (r"^layers\.(\d+)\.feed_forward\.w2\.", r"model.layers.\1.mlp.down_proj."),
    (r"^layers\.(\d+)\.attention_norm\.", r"model.layers.\1.input_layernorm."),
    (r"^layers\.(\d+)\.ffn_norm\.", r"model.layers.\1.post_attention_layernorm."),
]


def to_transformers_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official Cosmos AR state dict with transformers' names (unknown names are kept, and then refused)."""
    out = {}
    for name, tensor in state.items():
        for pattern, repl in _RENAMES:
            new, hits = re.subn(pattern, repl, name)
            if hits:
                name = new
                break
        out[name] = tensor
    return out


def _axes(head_dim: int) -> tuple[int, int]:
    """(channels per spatial axis, temporal channels), as RotaryPositionEmbedding and SinCosPosEmbAxisTE split."""
    dim_h = head_dim // 6 * 2
    return dim_h, head_dim - 2 * dim_h


class Rope3D(torch.nn.Module):
    """Cosmos' 3-D RoPE as a transformers ``rotary_emb``: positions ``[B, T]`` -> ``(cos, sin)`` ``[B, T, D]``."""

    def __init__(self, head_dim: int, latent_shape: list[int], theta: float):
        super().__init__()
        dim_h, dim_t = _axes(head_dim)
        self.latent_shape = tuple(int(x) for x in latent_shape)
        spatial = 1.0 / theta ** (torch.arange(0, dim_h, 2)[: dim_h // 2].float() / dim_h)
        temporal = 1.0 / theta ** (torch.arange(0, dim_t, 2)[: dim_t // 2].float() / dim_t)
        self.register_buffer("spatial", spatial, persistent=False)
        self.register_buffer("temporal", temporal, persistent=False)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, h, w = self.latent_shape
        p = position_ids.float()
        t, rest = torch.div(p, h * w, rounding_mode="floor"), torch.remainder(p, h * w)
        row, col = torch.div(rest, w, rounding_mode="floor"), torch.remainder(rest, w)
        half = torch.cat(
            [t[..., None] * self.temporal, row[..., None] * self.spatial, col[..., None] * self.spatial], -1
        )
        emb = torch.cat([half, half], -1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def sincos_3d(dim: int, positions: torch.Tensor, latent_shape: list[int]) -> torch.Tensor:
    """SinCosPosEmbAxisTE's absolute embedding ``[..., dim]`` of flat latent positions: (t, h, w) sin-cos parts."""
    dim_h, dim_t = _axes(dim)
    _, h, w = latent_shape
    p = positions.double()
    coords = [
        torch.div(p, h * w, rounding_mode="floor"),
        torch.div(torch.remainder(p, h * w), w, rounding_mode="floor"),
        torch.remainder(p, w),
    ]

    def one(d: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64, device=pos.device) / (d / 2.0))
        out = pos[..., None] * omega
        return torch.cat([out.sin(), out.cos()], -1)

    return torch.cat([one(dim_t, coords[0]), one(dim_h, coords[1]), one(dim_h, coords[2])], -1).float()


def cosmos_config(params: dict[str, Any]) -> Any:
    """The transformers config of an official Cosmos ``ModelConfig`` dict (``params``)."""
    from transformers import LlamaConfig, Qwen3Config

    p = {**DEFAULTS, **params}
    if p["apply_yarn"]:
        raise ValueError("config.json: apply_yarn is set (YaRN RoPE extension, used by the 12B); not supported here")
    if p["rope_dim"] != "3D" or p["norm_type"] != "rmsnorm":
        raise ValueError(
            f"config.json: rope_dim {p['rope_dim']!r} / norm_type {p['norm_type']!r}; Cosmos AR uses '3D' / 'rmsnorm'"
        )
    head_dim = p["head_dim"] or p["dim"] // p["n_heads"]
    common = dict(
        vocab_size=p["vocab_size"],
        hidden_size=p["dim"],
        intermediate_size=p["ffn_hidden_size"],
        num_hidden_layers=p["n_layers"],
        num_attention_heads=p["n_heads"],
        num_key_value_heads=p["n_kv_heads"] or p["n_heads"],
        head_dim=head_dim,
        rms_norm_eps=p["norm_eps"],
        max_position_embeddings=p["max_seq_len"],
        tie_word_embeddings=False,
        attention_bias=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    config = Qwen3Config(**common) if p["use_qk_normalization"] else LlamaConfig(**common)
    config.cosmos = {k: p[k] for k in ("video_latent_shape", "rope_theta", "apply_abs_pos_emb")}
    return config


class CosmosAR(HFCausalLM):
    """A Cosmos-Predict1 AR token model for the engine: prompts are DV8x16x16 token ids of the conditioning
    latent frames (flat, frame-major raster, as the tokenizer's indices), generation continues the clip."""

    def __init__(self, model: Any):
        super().__init__(model)
        extra = model.config.cosmos
        self.latent_shape = list(extra["video_latent_shape"])
        inner = model.model
        inner.rotary_emb = Rope3D(model.config.head_dim, self.latent_shape, float(extra["rope_theta"])).to(model.device)
        if extra["apply_abs_pos_emb"]:
            dim = model.config.hidden_size

            def add_abs(module, args, kwargs):  # official: h = h + abs_pos_emb[input_pos] before every block
                hidden = args[0] if args else kwargs["hidden_states"]
                hidden = hidden + sincos_3d(dim, kwargs["position_ids"], self.latent_shape).to(hidden.dtype)
                return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

            for layer in inner.layers:
                layer.register_forward_pre_hook(add_abs, with_kwargs=True)

    @property
    def tokens_per_frame(self) -> int:
        return self.latent_shape[1] * self.latent_shape[2]

    @property
    def num_tokens(self) -> int:
        return self.latent_shape[0] * self.tokens_per_frame

    def prompt(self, frames: torch.Tensor | list[list[int]]) -> TokenPrompt:
        """Conditioning tokens per clip (lists may differ in length) -> a prompt; ids must be in the vocabulary."""
        rows = [list(map(int, r)) for r in frames]
        if not rows or any(not r for r in rows):
            raise ValueError("each clip needs at least one conditioning token")
        flat = [t for r in rows for t in r]
        if min(flat) < 0 or max(flat) >= self.vocab_size:
            raise ValueError(
                f"conditioning tokens must be in [0, {self.vocab_size}), got range [{min(flat)}, {max(flat)}]"
            )
        if max(map(len, rows)) >= self.num_tokens:
            raise ValueError(f"conditioning is as long as the clip ({self.num_tokens} tokens): nothing to generate")
        return TokenPrompt.from_lists(rows).to(self.device)


def load_cosmos_ar(path: str | os.PathLike, device: str | torch.device = "cpu") -> CosmosAR:
    """A Cosmos AR folder: ``config.json`` (official ModelConfig fields) and ``model.safetensors`` or ``model.pt``.
    Missing or mismatched files raise :class:`~mmaccel.checkpoint.CheckpointError` naming the file."""
    from transformers import LlamaForCausalLM, Qwen3ForCausalLM

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"Cosmos AR folder not found: {str(folder)!r}")
    cfg_path = folder / "config.json"
    try:
        params = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{str(folder)!r} has no config.json (the official ModelConfig fields: dim, n_layers, ...)"
        ) from None
    except ValueError as err:
        raise CheckpointError(f"{str(cfg_path)!r} is not valid JSON: {err}") from err
    if not isinstance(params, dict) or "model_type" in params:
        raise CheckpointError(f"{str(cfg_path)!r} is a transformers config, not a Cosmos AR ModelConfig")
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{str(folder)!r} holds none of {', '.join(WEIGHT_FILES)}")
    try:
        config = cosmos_config(params)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{str(cfg_path)!r}: {err}") from err
    cls = Qwen3ForCausalLM if config.model_type == "qwen3" else LlamaForCausalLM
    model = cls(config)
    load_checked(model, to_transformers_names(read_state_dict(weights)), str(weights))
    return CosmosAR(model.to(device).eval())


__all__ = ["CHECKPOINTS", "CosmosAR", "Rope3D", "cosmos_config", "load_cosmos_ar", "sincos_3d", "to_transformers_names"]
