"""LlamaGen's VQ image tokenizer: a VQGAN-style conv encoder/decoder around a vector quantiser.

Architecture and parameter names follow LlamaGen (Sun et al. 2024, "Autoregressive Model Beats
Diffusion", github.com/FoundationVision/LlamaGen, ``tokenizer/tokenizer_image/vq_model.py``), which in
turn follows taming-transformers (Esser et al. 2021), so an official ``vq_ds16_c2i.pt`` loads unchanged
into ``VQModel(VQConfig.named("VQ-16"))``. Codes are l2-normalised (``codebook_l2_norm``, after
ViT-VQGAN, Yu et al. 2022): nearest-code search is then a cosine search, and ``codebook()`` gives the
unit vectors whose neighbourhoods define "nearby tokens" for relaxed acceptance (LANTERN).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict
from mmaccel.io import write_atomic, write_json_atomic

# LlamaGen keeps the last 65536 assigned indices in a buffer to report codebook usage; official
# checkpoints carry it, so every config with `codebook_show_usage` keeps it too.
_USAGE_WINDOW = 65536


@dataclass
class VQConfig:
    """Hyper-parameters of :class:`VQModel`; field names follow LlamaGen's ``ModelArgs``.

    ``ch``, ``num_res_blocks`` and ``norm_groups`` are constants in LlamaGen (128, 2, 32); they are
    fields here so that small tokenizers can be trained on a CPU. ``image_size`` is the resolution the
    tokenizer was trained at (informational).
    """

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    encoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    z_channels: int = 256
    dropout_p: float = 0.0
    ch: int = 128
    num_res_blocks: int = 2
    norm_groups: int = 32
    image_size: int = 256

    def __post_init__(self) -> None:
        self.encoder_ch_mult = tuple(int(m) for m in self.encoder_ch_mult)
        self.decoder_ch_mult = tuple(int(m) for m in self.decoder_ch_mult)
        if len(self.encoder_ch_mult) != len(self.decoder_ch_mult):
            raise ValueError(
                f"encoder_ch_mult {self.encoder_ch_mult} and decoder_ch_mult {self.decoder_ch_mult} "
                "must have the same length (same downsampling factor)"
            )
        for name in ("codebook_size", "codebook_embed_dim", "z_channels", "ch", "num_res_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"VQConfig.{name} must be >= 1, got {getattr(self, name)}")
        widths = [self.ch * m for m in self.encoder_ch_mult + self.decoder_ch_mult]
        if any(w % self.norm_groups for w in widths):
            raise ValueError(
                f"VQConfig: every width ch * ch_mult ({sorted(set(widths))}) must be divisible by "
                f"norm_groups={self.norm_groups}"
            )

    @property
    def downsample(self) -> int:
        """Image pixels per token along each side (16 for VQ-16)."""
        return 2 ** (len(self.encoder_ch_mult) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["encoder_ch_mult"] = list(self.encoder_ch_mult)
        d["decoder_ch_mult"] = list(self.decoder_ch_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VQConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VQConfig fields {unknown}")
        return cls(**d)

    @classmethod
    def named(cls, name: str) -> VQConfig:
        """A config by name: ``VQ-16`` / ``VQ-8`` (official LlamaGen), ``VQ-small`` (64x64 -> 16x16,
        the image default model), ``VQ-tiny`` (tests)."""
        if name not in NAMED_CONFIGS:
            raise ValueError(f"unknown VQ config name {name!r}; choose from {sorted(NAMED_CONFIGS)}")
        return cls(**NAMED_CONFIGS[name])


NAMED_CONFIGS: dict[str, dict] = {
    "VQ-16": {},
    "VQ-8": {"encoder_ch_mult": (1, 2, 2, 4), "decoder_ch_mult": (1, 2, 2, 4)},
    "VQ-small": {
        "codebook_size": 1024,
        "encoder_ch_mult": (1, 2, 2),
        "decoder_ch_mult": (1, 2, 2),
        "z_channels": 64,
        "ch": 32,
        "num_res_blocks": 1,
        "image_size": 64,
    },
    "VQ-tiny": {
        "codebook_size": 64,
        "codebook_embed_dim": 4,
        "encoder_ch_mult": (1, 1),
        "decoder_ch_mult": (1, 1),
        "z_channels": 32,
        "ch": 32,
        "num_res_blocks": 1,
        "image_size": 16,
    },
}


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual; a 1x1 ``nin_shortcut`` when the width changes."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1-conv projections."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = _norm(ch, groups)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (proj(y).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, as LlamaGen
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv with (0, 1, 0, 1) padding: taming-transformers' asymmetric downsampling."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    # LlamaGen builds each resolution level as a bare nn.Module with `res`, `attn` and an optional
    # `downsample`/`upsample`; the attribute names are part of the checkpoint's key names.
    def __init__(self, res: list[nn.Module], attn: list[nn.Module], resample: nn.Module | None, up: bool):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(attn)
        self._resample_name = None if resample is None else ("upsample" if up else "downsample")
        if resample is not None:
            setattr(self, self._resample_name, resample)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.res):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return getattr(self, self._resample_name)(h) if self._resample_name else h


def _mid(ch: int, groups: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(
        [ResnetBlock(ch, ch, groups, dropout), AttnBlock(ch, groups), ResnetBlock(ch, ch, groups, dropout)]
    )


class Encoder(nn.Module):
    """Image [B, 3, H, W] -> latent [B, z_channels, H/f, W/f]; attention at the lowest resolution."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        g, ch, mult, n = cfg.norm_groups, cfg.ch, cfg.encoder_ch_mult, cfg.num_res_blocks
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        levels = []
        block_in = ch
        for i, m in enumerate(mult):
            last = i == len(mult) - 1
            res, attn = [], []
            for _ in range(n):
                res.append(ResnetBlock(block_in, ch * m, g, cfg.dropout_p))
                block_in = ch * m
                if last:
                    attn.append(AttnBlock(block_in, g))
            levels.append(_Level(res, attn, None if last else Downsample(block_in), up=False))
        self.conv_blocks = nn.ModuleList(levels)
        self.mid = _mid(block_in, g, cfg.dropout_p)
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = level(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [B, z_channels, h, w] -> image [B, 3, h*f, w*f]; levels run from lowest resolution up."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        g, ch, mult, n = cfg.norm_groups, cfg.ch, cfg.decoder_ch_mult, cfg.num_res_blocks
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in, g, cfg.dropout_p)
        levels = []
        for i in reversed(range(len(mult))):
            res, attn = [], []
            for _ in range(n + 1):
                res.append(ResnetBlock(block_in, ch * mult[i], g, cfg.dropout_p))
                block_in = ch * mult[i]
                if i == len(mult) - 1:
                    attn.append(AttnBlock(block_in, g))
            levels.append(_Level(res, attn, Upsample(block_in) if i != 0 else None, up=True))
        self.conv_blocks = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with a straight-through gradient (van den Oord et al. 2017).

    With ``l2_norm`` both latents and codes are unit vectors before the search (ViT-VQGAN), which
    keeps the codebook well used without EMA updates.
    """

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.l2_norm = cfg.codebook_l2_norm
        self.beta = cfg.commit_loss_beta
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size)
        if self.l2_norm:
            with torch.no_grad():
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        if cfg.codebook_show_usage:
            self.register_buffer("codebook_used", torch.zeros(_USAGE_WINDOW))
        else:
            self.codebook_used = None

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices [N] of the nearest codes to latents [N, D] (already normalised if l2_norm)."""
        e = self.codebook()
        d = (z * z).sum(1, keepdim=True) + (e * e).sum(1) - 2 * z @ e.t()
        return d.argmin(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """z [B, D, h, w] -> (quantised [B, D, h, w], losses, indices [B, h, w])."""
        b, d, h, w = z.shape
        z = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        idx = self.nearest(z)
        z_q = self.codebook()[idx]
        losses: dict[str, torch.Tensor] = {}
        if self.training:
            losses["vq"] = F.mse_loss(z_q, z.detach())
            losses["commit"] = self.beta * F.mse_loss(z, z_q.detach())
            if self.codebook_used is not None:
                n = min(idx.numel(), _USAGE_WINDOW)
                with torch.no_grad():
                    self.codebook_used.copy_(torch.cat([self.codebook_used[n:], idx[-n:].float()]))
        z_q = z + (z_q - z).detach()
        z_q = z_q.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return z_q, losses, idx.reshape(b, h, w)


class VQModel(nn.Module):
    """LlamaGen VQ tokenizer. Images are float in [-1, 1], [B, 3, H, W]; tokens are [B, H/f, W/f]."""

    def __init__(self, config: VQConfig | None = None):
        super().__init__()
        self.config = config if config is not None else VQConfig()
        cfg = self.config
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, 1)

    # ------------------------------------------------------------------ tokens
    def _check_images(self, images: torch.Tensor) -> None:
        f = self.config.downsample
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        if images.shape[2] % f or images.shape[3] % f:
            raise ValueError(f"images height and width must be multiples of {f}, got {tuple(images.shape)}")

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latent [B, D, h, w] (``quant_conv`` output)."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images float [-1, 1] [B, 3, H, W] -> token indices int64 [B, H/f, W/f]."""
        return self.quantize(self.encode_latent(images))[2]

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        """Quantised latent [B, D, h, w] -> images [B, 3, h*f, w*f] (roughly in [-1, 1])."""
        return self.decoder(self.post_quant_conv(quant))

    @torch.no_grad()
    def decode_code(self, indices: torch.Tensor) -> torch.Tensor:
        """Token indices [B, h, w] -> images float [B, 3, h*f, w*f], clamped to [-1, 1]."""
        if indices.ndim != 3:
            raise ValueError(f"indices must be [B, h, w], got shape {tuple(indices.shape)}")
        k = self.config.codebook_size
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
            raise ValueError(f"indices must lie in [0, {k}), got range [{int(indices.min())}, {int(indices.max())}]")
        return self.decode(self.code_latent(indices)).clamp(-1, 1)

    def code_latent(self, indices: torch.Tensor) -> torch.Tensor:
        """Token indices [B, h, w] -> the quantised latent [B, D, h, w] that :meth:`decode` reads (with gradients
        to the codebook, for decoder fine-tuning)."""
        return self.quantize.codebook()[indices.long()].permute(0, 3, 1, 2)

    def codebook(self) -> torch.Tensor:
        """The code vectors [K, D] as the decoder sees them (unit length when ``codebook_l2_norm``)."""
        return self.quantize.codebook().detach()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Training pass: (reconstruction, quantiser losses, indices)."""
        quant, losses, idx = self.quantize(self.encode_latent(images))
        return self.decode(quant), losses, idx

    # ------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: VQConfig | str | None = None) -> VQModel:
        """Load weights from a ``.safetensors`` file, a torch ``.pt/.pth`` checkpoint, or a directory.

        The config comes from ``config`` (a :class:`VQConfig` or a name), else from a json beside the
        weights (``<stem>_config.json`` or ``config.json``), else ``VQ-16`` (the official release ships
        ``.pt`` files without a config). A directory is searched for ``vq.safetensors``.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "vq.safetensors")
        if isinstance(config, str):
            config = VQConfig.named(config)
        if config is None:
            config = _config_beside(path) or VQConfig()
        model = cls(config)
        load_checked(model, read_state_dict(path), path)
        return model.eval()

    def save_pretrained(self, directory: str | os.PathLike, name: str = "vq") -> str:
        """Write ``<name>.safetensors`` and ``<name>_config.json`` into ``directory``.

        Returns the weights path.
        """
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        weights = os.path.join(directory, f"{name}.safetensors")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        write_atomic(weights, lambda tmp: save_file(state, tmp))
        write_json_atomic(os.path.join(directory, f"{name}_config.json"), self.config.to_dict())
        return weights


def image_gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance between the horizontal and vertical pixel differences of ``a`` and ``b`` ``[..., H, W]``."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(a), dx(b)) + F.l1_loss(dy(a), dy(b))


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The tokenizers' pixel loss: LlamaGen's reconstruction terms (Sun et al. 2024) without its GAN and LPIPS,
    L1 + L2 plus half an L1 on image gradients, a cheap edge-sharpness term standing in for the perceptual loss."""
    return F.l1_loss(recon, target) + F.mse_loss(recon, target) + 0.5 * image_gradient_l1(recon, target)


def _config_beside(weights_path: str) -> VQConfig | None:
    stem = os.path.splitext(weights_path)[0]
    for candidate in (stem + "_config.json", os.path.join(os.path.dirname(weights_path), "config.json")):
        if os.path.isfile(candidate):
            try:
                with open(candidate) as f:
                    return VQConfig.from_dict(json.load(f))
            except (json.JSONDecodeError, TypeError, ValueError) as err:
                raise CheckpointError(f"cannot read VQ config {candidate!r}: {err}") from err
    return None


__all__ = [
    "VQConfig",
    "VQModel",
    "NAMED_CONFIGS",
    "Encoder",
    "Decoder",
    "VectorQuantizer",
    "image_gradient_l1",
    "reconstruction_loss",
]
