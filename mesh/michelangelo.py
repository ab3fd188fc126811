"""The Michelangelo shape-VAE point encoder (Zhao et al. 2023, "Michelangelo: Conditional 3D Shape Generation based
on Shape-Image-Text Aligned Latent Representation") as MeshAnything V2 conditions on it.

Only the parts MeshAnything V2's ``point_encoder`` holds, under the official parameter names (its
``AlignedShapeAsLatentPLModule`` -> ``CLIPAlignedShapeAsLatentModule`` -> ``AlignedShapeLatentPerceiver``), so
the released ``point_encoder.*`` tensors load unchanged. The CLIP model the aligned module was trained beside is
not part of the checkpoint (the official code sets it to ``None``). The geometry decoder is built so the
checkpoint loads strictly; MeshAnything never queries it.

Attention follows the official ``QKVMultiheadAttention``: the fused projection is split per head first, then into
``q``, ``k``, ``v`` (``[..., heads, 3 * ch]``), and ``q * s`` against ``k * s`` with ``s = ch ** -0.25`` is the
usual ``1 / sqrt(ch)`` scaling, which :func:`torch.nn.functional.scaled_dot_product_attention` applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class PointEncoderConfig:
    """The shape VAE's sizes; the defaults are MeshAnything V2's ``shapevae-256.yaml``."""

    num_latents: int = 256
    embed_dim: int = 64
    point_feats: int = 3  # the normal beside each point
    num_freqs: int = 8
    include_pi: bool = False
    heads: int = 12
    width: int = 768
    num_encoder_layers: int = 8
    num_decoder_layers: int = 16
    qkv_bias: bool = False
    use_ln_post: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _heads_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``[B, N, H, C]`` queries against ``[B, M, H, C]`` keys and values, to ``[B, N, H * C]``."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return rearrange(out, "b h n c -> b n (h c)")


class MultiheadAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = rearrange(self.c_qkv(x), "b n (h c) -> b n h c", h=self.heads)
        q, k, v = qkv.chunk(3, dim=-1)
        return self.c_proj(_heads_attention(q, k, v))


class MultiheadCrossAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.c_q = nn.Linear(width, width, bias=qkv_bias)
        self.c_kv = nn.Linear(width, width * 2, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.c_q(x), "b n (h c) -> b n h c", h=self.heads)
        k, v = rearrange(self.c_kv(data), "b m (h c) -> b m h c", h=self.heads).chunk(2, dim=-1)
        return self.c_proj(_heads_attention(q, k, v))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.c_proj = nn.Linear(width * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.attn = MultiheadAttention(width, heads, qkv_bias)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = MLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ResidualCrossAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.attn = MultiheadCrossAttention(width, heads, qkv_bias)
        self.ln_1 = nn.LayerNorm(width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)
        self.ln_3 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), self.ln_2(data))
        return x + self.mlp(self.ln_3(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, qkv_bias) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class FourierEmbedder(nn.Module):
    """``x`` beside ``sin`` and ``cos`` of ``x`` at frequencies ``2 ** i`` (times pi when ``include_pi``)."""

    def __init__(self, num_freqs: int, include_pi: bool):
        super().__init__()
        freqs = 2.0 ** torch.arange(num_freqs, dtype=torch.float32)
        self.register_buffer("frequencies", freqs * torch.pi if include_pi else freqs, persistent=False)
        self.out_dim = 3 * (2 * num_freqs + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed = (x[..., None] * self.frequencies).flatten(-2)
        return torch.cat([x, embed.sin(), embed.cos()], dim=-1)


class CrossAttentionEncoder(nn.Module):
    def __init__(self, config: PointEncoderConfig, fourier: FourierEmbedder, num_queries: int):
        super().__init__()
        w = config.width
        self.query = nn.Parameter(torch.randn(num_queries, w) * 0.02)
        self.input_proj = nn.Linear(fourier.out_dim + config.point_feats, w)
        self.cross_attn = ResidualCrossAttentionBlock(w, config.heads, config.qkv_bias)
        self.self_attn = Transformer(w, config.num_encoder_layers, config.heads, config.qkv_bias)
        self.ln_post = nn.LayerNorm(w) if config.use_ln_post else None
        self._fourier = [fourier]  # shared with the perceiver, not a second registered copy

    def forward(self, pc: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        data = self.input_proj(torch.cat([self._fourier[0](pc), feats], dim=-1))
        latents = self.self_attn(self.cross_attn(self.query.expand(pc.shape[0], -1, -1), data))
        return self.ln_post(latents) if self.ln_post is not None else latents


class CrossAttentionDecoder(nn.Module):
    """The occupancy decoder of the shape VAE: loaded with the checkpoint, unused by MeshAnything."""

    def __init__(self, config: PointEncoderConfig, fourier: FourierEmbedder):
        super().__init__()
        w = config.width
        self.query_proj = nn.Linear(fourier.out_dim, w)
        self.cross_attn_decoder = ResidualCrossAttentionBlock(w, config.heads, config.qkv_bias)
        self.ln_post = nn.LayerNorm(w)
        self.output_proj = nn.Linear(w, 1)


class AlignedShapeLatentPerceiver(nn.Module):
    def __init__(self, config: PointEncoderConfig):
        super().__init__()
        self.fourier_embedder = FourierEmbedder(config.num_freqs, config.include_pi)
        # One query more than the latents: its output is the shape embedding (the aligned module's CLS).
        self.encoder = CrossAttentionEncoder(config, self.fourier_embedder, config.num_latents + 1)
        self.pre_kl = nn.Linear(config.width, config.embed_dim * 2)
        self.post_kl = nn.Linear(config.embed_dim, config.width)
        self.transformer = Transformer(config.width, config.num_decoder_layers, config.heads, config.qkv_bias)
        self.geo_decoder = CrossAttentionDecoder(config, self.fourier_embedder)


class CLIPAlignedShapeAsLatentModule(nn.Module):
    def __init__(self, config: PointEncoderConfig):
        super().__init__()
        self.shape_projection = nn.Parameter(torch.empty(config.width, config.width).normal_(std=config.width**-0.5))
        self.shape_model = AlignedShapeLatentPerceiver(config)


class MichelangeloPointEncoder(nn.Module):
    """MeshAnything V2's ``point_encoder``: point clouds with normals to ``1 + num_latents`` features of ``width``.

    ``encode_latents`` and ``to_shape_latents`` are the two calls MeshAnything V2 makes (the official
    ``AlignedShapeAsLatentPLModule`` methods of those names; the posterior's mode, as the official code takes).
    """

    def __init__(self, config: PointEncoderConfig | None = None):
        super().__init__()
        self.config = config or PointEncoderConfig()
        self.model = CLIPAlignedShapeAsLatentModule(self.config)

    def encode_latents(self, pc_normal: torch.Tensor) -> torch.Tensor:
        """``[B, N, 6]`` points and normals to ``[B, 1 + num_latents, width]``: the shape embedding, then the
        latents."""
        return self.model.shape_model.encoder(pc_normal[..., :3], pc_normal[..., 3:6])

    def to_shape_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's decoded latents ``[B, num_latents, width]`` for encoder latents (no sampling: the mode)."""
        shape = self.model.shape_model
        mean = shape.pre_kl(latents).chunk(2, dim=-1)[0]
        return shape.transformer(shape.post_kl(mean))
