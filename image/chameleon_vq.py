"""The decoder half of Chameleon's VQGAN image tokenizer, which Lumina-mGPT and Anole decode with.

``transformers``' ``ChameleonVQVAE`` holds only the encoder and the quantiser, so pixels need the official
tokenizer checkpoint (Chameleon Team 2024, ``tokenizer/vqgan.ckpt`` + ``vqgan.yaml``). That checkpoint is a
taming-transformers ``VQModel`` (Esser et al. 2021); this module rebuilds the parts decoding needs under the
same parameter names (``quantize.embedding``, ``post_quant_conv``, ``decoder.conv_in``, ``decoder.mid.block_1``,
``decoder.up.{i}.block.{j}``, ``decoder.norm_out``, ``decoder.conv_out``, ...), so the file loads unchanged.
The building blocks are LlamaGen's (:mod:`mmaccel.models.vq`), which follow the same taming design.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmaccel.checkpoint import load_checked, read_state_dict

from mmaccel.models.vq import AttnBlock, ResnetBlock, Upsample

# Only these parts of the taming checkpoint are needed; the encoder, quant_conv and the GAN loss stay out.
_DECODE_PREFIXES = ("decoder.", "post_quant_conv.", "quantize.")


@dataclass
class ChameleonVQConfig:
    """taming-transformers ``ddconfig`` plus the codebook size; defaults are Chameleon's 512 px tokenizer."""

    n_embed: int = 8192
    embed_dim: int = 256
    z_channels: int = 256
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 512
    out_ch: int = 3
    attn_type: str = "vanilla"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions or ())
        if self.attn_type not in ("vanilla", "none"):
            raise ValueError(f"attn_type must be 'vanilla' or 'none', got {self.attn_type!r}")

    @property
    def downsample(self) -> int:
        """Image pixels per code along each side (16 for Chameleon)."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> ChameleonVQConfig:
        """Read the official ``vqgan.yaml`` (``model.params.{n_embed, embed_dim, ddconfig}``)."""
        import yaml

        with open(path) as f:
            doc = yaml.safe_load(f)
        try:
            params = doc["model"]["params"]
            dd = params["ddconfig"]
            values: dict[str, Any] = {"n_embed": params["n_embed"], "embed_dim": params["embed_dim"]}
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a taming VQGAN config: no model.params.{err}") from err
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in dd.items() if k in known})
        return cls(**values)

    @classmethod
    def from_hf(cls, vq_config: Any) -> ChameleonVQConfig:
        """The same architecture from ``transformers``' ``ChameleonVQVAEConfig`` (it mirrors ``ddconfig``)."""
        return cls(
            n_embed=vq_config.num_embeddings,
            embed_dim=vq_config.embed_dim,
            z_channels=vq_config.latent_channels,
            ch=vq_config.base_channels,
            ch_mult=tuple(vq_config.channel_multiplier),
            num_res_blocks=vq_config.num_res_blocks,
            attn_resolutions=tuple(vq_config.attn_resolutions or ()),
            resolution=vq_config.resolution,
            out_ch=vq_config.in_channels,
            attn_type=vq_config.attn_type or "none",
        )


class _Level(nn.Module):
    # taming builds each resolution level as a bare nn.Module with `block`, `attn` and `upsample`;
    # those attribute names are part of the checkpoint's keys.
    def __init__(self, block: list[nn.Module], attn: list[nn.Module], upsample: nn.Module | None):
        super().__init__()
        self.block = nn.ModuleList(block)
        self.attn = nn.ModuleList(attn)
        if upsample is not None:
            self.upsample = upsample

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return self.upsample(h) if hasattr(self, "upsample") else h


class TamingDecoder(nn.Module):
    """taming-transformers' ``Decoder``: latent ``[B, z, h, w]`` -> image ``[B, 3, h*f, w*f]``."""

    def __init__(self, cfg: ChameleonVQConfig):
        super().__init__()
        g, ch, mult, n = 32, cfg.ch, cfg.ch_mult, cfg.num_res_blocks
        block_in = ch * mult[-1]
        res = cfg.resolution // 2 ** (len(mult) - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, g, cfg.dropout)
        self.mid.attn_1 = AttnBlock(block_in, g) if cfg.attn_type == "vanilla" else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, g, cfg.dropout)
        levels: list[_Level] = []
        for i in reversed(range(len(mult))):
            block, attn = [], []
            for _ in range(n + 1):
                block.append(ResnetBlock(block_in, ch * mult[i], g, cfg.dropout))
                block_in = ch * mult[i]
                if res in cfg.attn_resolutions:
                    attn.append(AttnBlock(block_in, g))
            levels.insert(0, _Level(block, attn, Upsample(block_in) if i != 0 else None))
            res = res * 2 if i != 0 else res
        # Stored lowest level first (taming's `up.insert(0, ...)`), run from the deepest level up.
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(torch.nn.functional.silu(self.norm_out(h)))


class _Quantize(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)


class ChameleonVQDecoder(nn.Module):
    """Codes ``[B, h, w]`` -> pixels, with the official Chameleon VQGAN's decoder weights (Chameleon Team 2024)."""

    def __init__(self, config: ChameleonVQConfig | None = None):
        super().__init__()
        self.config = config if config is not None else ChameleonVQConfig()
        cfg = self.config
        self.quantize = _Quantize(cfg.n_embed, cfg.embed_dim)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.decoder = TamingDecoder(cfg)

    def codebook(self) -> torch.Tensor:
        """``[n_embed, embed_dim]`` code vectors."""
        return self.quantize.embedding.weight.detach()

    @torch.no_grad()
    def decode_code(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, h, w]`` -> images float ``[B, 3, h*f, w*f]`` clamped to [-1, 1]."""
        if codes.ndim != 3:
            raise ValueError(f"codes must be [B, h, w], got shape {tuple(codes.shape)}")
        k = self.config.n_embed
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
            raise ValueError(f"codes must lie in [0, {k}), got range [{int(codes.min())}, {int(codes.max())}]")
        quant = self.quantize.embedding(codes.long()).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(quant)).clamp(-1, 1)

    @classmethod
    def from_checkpoint(
        cls, ckpt: str | os.PathLike, config: ChameleonVQConfig | str | os.PathLike | None = None
    ) -> ChameleonVQDecoder:
        """Load the decoder from the official ``vqgan.ckpt`` (read with ``weights_only=True``).

        ``config`` is a :class:`ChameleonVQConfig` or the path of ``vqgan.yaml``; by default the yaml beside
        the checkpoint. Keys outside the decoder, ``post_quant_conv`` and ``quantize`` are ignored; a missing or
        mis-shaped one raises naming the key and both shapes.
        """
        ckpt = Path(ckpt)
        if config is None:
            beside = ckpt.with_name("vqgan.yaml")
            if not beside.is_file():
                raise FileNotFoundError(f"no VQGAN config beside {ckpt}: expected {beside}")
            config = beside
        if not isinstance(config, ChameleonVQConfig):
            config = ChameleonVQConfig.from_yaml(config)
        model = cls(config)
        state = {k: v for k, v in read_state_dict(ckpt).items() if k.startswith(_DECODE_PREFIXES)}
        load_checked(model, state, str(ckpt))
        return model.eval()


__all__ = ["ChameleonVQConfig", "ChameleonVQDecoder", "TamingDecoder"]
