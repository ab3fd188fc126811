"""LlamaGen's GPT, loading the official c2i and t2i checkpoints unchanged.

Sun et al. 2024, "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation"
(github.com/FoundationVision/LlamaGen, ``autoregressive/models/gpt.py``). A Llama decoder (RMSNorm,
SwiGLU, optional grouped-query attention) over ``[condition, image tokens in raster order]`` with a
2-D rotary embedding over the token grid. The condition is one class token (``model_type="c2i"``) or
``cls_token_num`` projected T5 caption features (``"t2i"``, see :class:`CaptionEmbedder`). The parameter
names and shapes are the official ones, so a release ``.pt`` (weights under ``"model"`` or ``"ema"``, or
a raw state dict for the FSDP-trained sizes) loads into :class:`LlamaGenGPT` as is.

:class:`LlamaGenModel` adapts the module to the engine's :class:`~mmaccel.models.TokenModel` contract
over a :class:`~mmaccel.models.SlotCache`; :class:`ClassPrompt` is its prompt.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmaccel.checkpoint import load_checked, read_state_dict
from mmaccel.models.base import ModelOutput, gather_last
from mmaccel.models.cache import SlotCache

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Where the default model's ``gpt.safetensors`` / ``gpt_config.json`` (and its draft) live."""


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of ``k`` that is ``>= n`` (LlamaGen's SwiGLU width rule)."""
    return n if n % k == 0 else n + k - n % k


@dataclass
class GPTConfig:
    """Shape of a LlamaGen GPT; field names follow the official ``ModelArgs``.

    ``vocab_size`` is the image tokenizer's codebook size, ``block_size`` the number of image tokens
    (a square grid, ``grid_size ** 2``), ``num_classes`` the number of real classes (embedding row
    ``num_classes`` is the null class used for guidance) and ``cls_token_num`` the number of
    positions the condition occupies before the image tokens: 1 for ``model_type="c2i"``, the caption
    length (120 in the official t2i models) for ``"t2i"``, whose captions are ``caption_dim``-wide T5
    features (2048, flan-t5-xl). ``dropout`` is the token, residual and feed-forward dropout used in
    training only.

    ``condition_rope`` is how the rotary table treats the condition positions: ``"zero"`` (official, what
    every released checkpoint was trained with) zeroes their rows, which zeroes the condition's queries and
    keys, so every attention score to the condition is fixed at 0 and only its value can carry it;
    ``"identity"`` leaves them unrotated, so attention to the condition is learnable. The default image
    model uses ``"identity"``: with ``"zero"`` a 3M-parameter GPT trained for two CPU hours had learned nothing
    from its class (val loss with the true class 1.719, with a wrong class 1.722).
    """

    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    vocab_size: int = 16384
    block_size: int = 256
    num_classes: int = 1000
    cls_token_num: int = 1
    dropout: float = 0.0
    model_type: str = "c2i"
    caption_dim: int = 2048
    condition_rope: str = "zero"

    def __post_init__(self) -> None:
        for name in ("dim", "n_layer", "n_head", "multiple_of", "vocab_size", "block_size", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.n_head:
            raise ValueError(f"GPTConfig.dim ({self.dim}) must be divisible by n_head ({self.n_head})")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            raise ValueError(f"GPTConfig.n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")
        if self.head_dim % 4:
            # The 2-D rotary embedding gives each grid axis head_dim // 4 complex pairs.
            raise ValueError(f"GPTConfig head dim (dim / n_head = {self.head_dim}) must be divisible by 4")
        if math.isqrt(self.block_size) ** 2 != self.block_size:
            raise ValueError(f"GPTConfig.block_size must be a square grid, got {self.block_size}")
        if self.model_type not in ("c2i", "t2i"):
            raise ValueError(f"GPTConfig.model_type must be 'c2i' or 't2i', got {self.model_type!r}")
        if self.model_type == "c2i" and self.cls_token_num != 1:
            # Official c2i models embed the class as one token; with more, the official code's
            # positions and rotary table fall out of step, so no checkpoint uses it.
            raise ValueError(
                f"GPTConfig.cls_token_num must be 1 for class-conditional models, got {self.cls_token_num}"
            )
        if self.condition_rope not in ("zero", "identity"):
            raise ValueError(f"GPTConfig.condition_rope must be 'zero' or 'identity', got {self.condition_rope!r}")
        if self.cls_token_num < 1 or self.caption_dim < 1:
            raise ValueError("GPTConfig.cls_token_num and caption_dim must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.block_size)

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return find_multiple(hidden, self.multiple_of)

    @property
    def max_positions(self) -> int:
        return self.cls_token_num + self.block_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> GPTConfig:
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {sorted(unknown)}")
        return cls(**fields)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> GPTConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"GPT config file not found: {str(path)!r}")
        try:
            fields = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"GPT config file {str(path)!r} is not valid JSON: {err}") from err
        return cls.from_dict(fields)


# Official c2i sizes (layers, heads, width) from LlamaGen's GPT_models; the small ones are this
# project's: "GPT-Mini" is the default image model, "GPT-Draft" its draft, "GPT-Tiny" for tests.
GPT_CONFIGS: dict[str, dict] = {
    "GPT-B": dict(n_layer=12, n_head=12, dim=768),
    "GPT-L": dict(n_layer=24, n_head=16, dim=1024),
    "GPT-XL": dict(n_layer=36, n_head=20, dim=1280),
    "GPT-XXL": dict(n_layer=48, n_head=24, dim=1536),
    "GPT-3B": dict(n_layer=24, n_head=32, dim=3200),
    "GPT-Mini": dict(n_layer=6, n_head=3, dim=192, vocab_size=1024, num_classes=10, condition_rope="identity"),
    "GPT-Draft": dict(n_layer=2, n_head=2, dim=128, vocab_size=1024, num_classes=10, condition_rope="identity"),
    "GPT-Tiny": dict(n_layer=2, n_head=2, dim=32, multiple_of=16, vocab_size=64, block_size=16, num_classes=5),
}


def gpt_config(name: str, **overrides) -> GPTConfig:
    """The named config (``"GPT-B"`` ... ``"GPT-3B"``, ``"GPT-Mini"``, ...), with fields overridden.

    Official c2i checkpoints use ``vocab_size=16384``, ``num_classes=1000`` and ``block_size`` 256
    (256 px images) or 576 (384 px).
    """
    if name not in GPT_CONFIGS:
        raise ValueError(f"unknown GPT config name {name!r}; choose from {sorted(GPT_CONFIGS)}")
    return GPTConfig(**{**GPT_CONFIGS[name], **overrides})


def rope_table_2d(config: GPTConfig) -> torch.Tensor:
    """Rotary (cos, sin) per position, ``[cls_token_num + block_size, head_dim // 2, 2]``.

    As in LlamaGen's ``precompute_freqs_cis_2d``: the first half of a head's pairs rotate with the
    token's grid row, the second half with its column, and the condition positions get all-zero rows,
    which zeroes their queries and keys (so attention reads the class token through its value only), or
    with ``condition_rope="identity"`` no rotation (cos 1, sin 0).
    """
    half = config.head_dim // 2
    freqs = 1.0 / (config.rope_base ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    g = config.grid_size
    angles = torch.outer(torch.arange(g, dtype=torch.float32), freqs)  # [g, head_dim // 4]
    grid = torch.cat([angles[:, None, :].expand(g, g, -1), angles[None, :, :].expand(g, g, -1)], dim=-1)
    table = torch.stack([grid.cos(), grid.sin()], dim=-1).flatten(0, 1)
    condition = torch.zeros(config.cls_token_num, half, 2)
    if config.condition_rope == "identity":
        condition[..., 0] = 1.0
    return torch.cat([condition, table])


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of ``x`` [B, T, H, Dh] by ``rope`` [B, T, Dh // 2], complex (cos + i sin)."""
    # One complex multiply instead of the official six real ops: same result, far fewer CPU kernels.
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rope[:, :, None]).flatten(-2).type_as(x)


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU MLP (Shazeer 2020): ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w3 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w2 = nn.Linear(config.ffn_hidden, config.dim, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class Attention(nn.Module):
    """Multi-head (or grouped-query) self-attention with a fused ``wqkv`` projection."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.kv_heads, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.wqkv = nn.Linear(config.dim, (config.n_head + 2 * config.kv_heads) * config.head_dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor,
        cache: SlotCache | None,
        layer_idx: int,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        kv = self.kv_heads * self.head_dim
        q, k, v = self.wqkv(x).split([self.n_head * self.head_dim, kv, kv], dim=-1)
        q = apply_rope(q.view(b, t, self.n_head, self.head_dim), rope).transpose(1, 2)
        k = apply_rope(k.view(b, t, self.kv_heads, self.head_dim), rope).transpose(1, 2)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, layer_idx)
        if self.kv_heads != self.n_head:
            k = k.repeat_interleave(self.n_head // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.n_head // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.dropout(self.wo(out.transpose(1, 2).reshape(b, t, -1)))


class TransformerBlock(nn.Module):
    """Pre-norm Llama block."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x, rope, cache, layer_idx, mask):
        h = x + self.attention(self.attention_norm(x), rope, cache, layer_idx, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
    """Class embeddings; the extra last row is the null class that classifier-free guidance uses."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


class CaptionEmbedder(nn.Module):
    """LlamaGen t2i's caption projection: ``cap_proj`` = ``fc2(gelu_tanh(fc1(x)))`` (no biases) from T5
    features to the model width, and ``uncond_embedding``, the ``[cls_token_num, caption_dim]`` caption
    that stands for "no text" under guidance (a persistent buffer, as in the official checkpoints)."""

    def __init__(self, caption_dim: int, dim: int, token_num: int):
        super().__init__()
        self.cap_proj = nn.Sequential()
        self.cap_proj.add_module("fc1", nn.Linear(caption_dim, dim, bias=False))
        self.cap_proj.add_module("act", nn.GELU(approximate="tanh"))
        self.cap_proj.add_module("fc2", nn.Linear(dim, dim, bias=False))
        self.register_buffer("uncond_embedding", torch.randn(token_num, caption_dim) / caption_dim**0.5)

    def forward(self, captions: torch.Tensor) -> torch.Tensor:
        return self.cap_proj(captions)


def hide_condition_padding(mask: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Hide padded condition slots in an additive attention ``mask`` ``[B, 1, T, S]``.

    ``valid`` ``[B, n]`` marks the real caption slots among the first ``n`` positions. A padded slot is
    visible to no query but its own position, as in the official ``generate()``, which multiplies the
    caption mask into the causal mask's columns and then restores the diagonal so a padding query still
    has something to attend to.
    """
    n = valid.shape[1]
    slots = torch.arange(n, device=positions.device)
    hidden = ~valid.to(positions.device)[:, None, :] & (slots != positions[..., None])  # [B, T, n]
    condition = mask[..., :n].masked_fill(hidden[:, None], torch.finfo(mask.dtype).min)
    return torch.cat([condition, mask[..., n:]], dim=-1)


class ConditionCache(SlotCache):
    """A :class:`SlotCache` whose first slots hold a padded caption: ``condition_valid`` ``[B, n]`` (set
    at prefill) hides the padded ones from every later query, see :func:`hide_condition_padding`."""

    def __init__(self, max_length: int):
        super().__init__(max_length)
        self.condition_valid: torch.Tensor | None = None

    def attention_mask(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        mask = super().attention_mask(positions, dtype)
        if self.condition_valid is None:
            return mask
        return hide_condition_padding(mask, positions, self.condition_valid)

    def reorder(self, index: torch.Tensor) -> None:
        super().reorder(index)
        if self.condition_valid is not None:
            self.condition_valid = self.condition_valid.index_select(0, index.to(self.condition_valid.device))


class LlamaGenGPT(nn.Module):
    """LlamaGen's ``Transformer`` (Sun et al. 2024), state-dict compatible with the official c2i and t2i ones.

    ``forward(cond, tokens)`` is the training pass: logits ``[B, C + N, V]`` for every position given the
    condition (class labels ``[B]``, or caption features ``[B, C, caption_dim]`` with ``condition_valid``
    marking real caption slots) and ``tokens[:, :N]``; the last ``N + 1`` rows predict image tokens
    ``0..N``. ``run(embeddings, positions, cache)`` is the cached pass the adapter uses. The rotary table is
    not a state-dict entry (the official model keeps it as a plain attribute), so checkpoints hold
    parameters and the t2i ``uncond_embedding`` buffer only.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        if config.model_type == "t2i":
            self.cls_embedding = CaptionEmbedder(config.caption_dim, config.dim, config.cls_token_num)
        else:
            self.cls_embedding = LabelEmbedder(config.num_classes, config.dim)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.tok_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.register_buffer("rope", rope_table_2d(config), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # LlamaGen's init: N(0, 0.02) for linears and embeddings, zero output head, unit norms.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        nn.init.zeros_(self.output.weight)

    def run(
        self,
        embeddings: torch.Tensor,
        positions: torch.Tensor,
        cache: SlotCache | None = None,
        condition_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-normed hidden states ``[B, T, D]`` for input embeddings at ``positions`` ``[B, T]``.

        Without a cache, ``positions`` must be ``0..T-1`` in every row (causal attention over the
        inputs); with one, each row's tokens go to the slots named by its positions. ``condition_valid``
        ``[B, n]`` hides padded caption slots (a :class:`ConditionCache` carries its own).
        """
        # A compiled step forward skips the checks: they are host syncs, and the engine's positions are valid.
        if not torch.compiler.is_compiling() and int(positions.min()) < 0:
            raise ValueError(f"positions must be >= 0, got {int(positions.min())}")
        # Speculative windows may run past the last image token; those slots are drafter scratch whose
        # outputs are discarded and which only later scratch slots can see, so reusing the last grid
        # cell's rotation there changes no image token's logits.
        table = self.rope[positions.clamp(max=self.config.max_positions - 1)]
        rope = torch.complex(table[..., 0], table[..., 1])
        mask = None
        if cache is not None:
            cache.set_positions(positions)
            mask = cache.attention_mask(positions, embeddings.dtype)
        elif condition_valid is not None:
            causal = positions[:, None, :] <= positions[:, :, None]
            mask = torch.zeros(causal.shape, dtype=embeddings.dtype, device=embeddings.device)
            mask = mask.masked_fill(~causal, torch.finfo(embeddings.dtype).min)[:, None]
        if condition_valid is not None:
            mask = hide_condition_padding(mask, positions, condition_valid)
        h = self.tok_dropout(embeddings)
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, cache, i, mask)
        return self.norm(h)

    def forward(
        self, cond: torch.Tensor, tokens: torch.Tensor, condition_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.config.model_type == "t2i":
            cond = self.cls_embedding(cond.to(self.output.weight.dtype))
        else:
            cond = self.cls_embedding(cond)[:, None]
        x = torch.cat([cond, self.tok_embeddings(tokens)], dim=1)
        positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        return self.output(self.run(x, positions, condition_valid=condition_valid)).float()


def load_llamagen(checkpoint: str | os.PathLike, config: GPTConfig | str | os.PathLike | None = None) -> LlamaGenGPT:
    """Build a :class:`LlamaGenGPT` and load ``checkpoint`` into it with shape checks.

    ``checkpoint`` is a ``.safetensors`` file or an official ``.pt`` (weights under ``"model"``,
    ``"ema"`` or raw). ``config`` is a :class:`GPTConfig`, a named config (``"GPT-B"``), a JSON file,
    or ``None`` to read ``<stem>_config.json`` beside the checkpoint. Weights stored in half precision
    are loaded as float32.
    """
    checkpoint = Path(checkpoint)
    if config is None:
        config = checkpoint.with_name(f"{checkpoint.stem}_config.json")
    if isinstance(config, str) and config in GPT_CONFIGS:
        config = gpt_config(config)
    elif not isinstance(config, GPTConfig):
        config = GPTConfig.load(config)
    model = LlamaGenGPT(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_state_dict(checkpoint).items()}
    load_checked(model, state, str(checkpoint))
    return model.eval()


@dataclass
class ClassPrompt:
    """Class labels ``[B]`` to condition on; each occupies ``cls_token_num`` positions."""

    labels: torch.Tensor
    cls_token_num: int = 1

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if self.labels.dim() != 1:
            raise ValueError(f"class_labels must be a 1-D tensor of class ids, got shape {tuple(self.labels.shape)}")
        self.lengths = torch.full_like(self.labels, self.cls_token_num)

    @property
    def batch_size(self) -> int:
        return self.labels.shape[0]

    def cat(self, other: ClassPrompt) -> ClassPrompt:
        if other.cls_token_num != self.cls_token_num:
            raise ValueError("cannot concatenate class prompts of different cls_token_num")
        return ClassPrompt(torch.cat([self.labels, other.labels.to(self.labels.device)]), self.cls_token_num)

    def to(self, device: torch.device | str) -> ClassPrompt:
        return ClassPrompt(self.labels.to(device), self.cls_token_num)


class LlamaGenModel:
    """A LlamaGen c2i GPT behind the engine's :class:`~mmaccel.models.TokenModel` contract.

    Position ``p < cls_token_num`` holds the class, position ``cls_token_num + i`` image token ``i``
    (raster order over the ``grid_size`` x ``grid_size`` grid). ``embedding_table()`` returns
    ``codebook`` when given (the VQ tokenizer's code vectors, which say which image tokens look
    alike) and the GPT's token embeddings otherwise.
    """

    def __init__(self, gpt: LlamaGenGPT, codebook: torch.Tensor | None = None):
        self.gpt = gpt.eval()
        self.config = gpt.config
        self.vocab_size = gpt.config.vocab_size
        if codebook is not None and codebook.shape[0] != self.vocab_size:
            raise ValueError(
                f"codebook must have one row per token ({self.vocab_size}), got shape {tuple(codebook.shape)}"
            )
        self.codebook = codebook

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | os.PathLike | None = None,
        config: GPTConfig | str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        codebook: torch.Tensor | None = None,
    ) -> LlamaGenModel:
        """Load a checkpoint (default: ``weights/gpt.safetensors``); see :func:`load_llamagen`."""
        gpt = load_llamagen(checkpoint if checkpoint is not None else WEIGHTS_DIR / "gpt.safetensors", config)
        return cls(gpt.to(device), codebook)

    @property
    def device(self) -> torch.device:
        return self.gpt.output.weight.device

    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    @property
    def num_tokens(self) -> int:
        """Image tokens per sample."""
        return self.config.block_size

    def class_prompt(self, class_labels: torch.Tensor | list[int]) -> ClassPrompt:
        """A prompt for real classes; ids outside ``[0, num_classes)`` raise ValueError."""
        labels = torch.as_tensor(class_labels, dtype=torch.long)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.config.num_classes):
            raise ValueError(f"class_labels must lie in [0, {self.config.num_classes}), got {labels.tolist()}")
        return ClassPrompt(labels, self.config.cls_token_num)

    def unconditional_prompt(self, prompt: ClassPrompt) -> ClassPrompt:
        """The null class for every row (the guidance counterpart of ``prompt``)."""
        return ClassPrompt(torch.full_like(prompt.labels, self.config.num_classes), prompt.cls_token_num)

    def new_cache(self, batch_size: int, max_length: int) -> SlotCache:
        return SlotCache(max_length)

    def _output(self, hidden: torch.Tensor, output_hidden: bool) -> ModelOutput:
        return ModelOutput(self.gpt.output(hidden).float(), hidden if output_hidden else None)

    @torch.no_grad()
    def prefill(self, prompt: ClassPrompt, cache: SlotCache, output_hidden: bool = False) -> ModelOutput:
        labels = prompt.labels.to(self.device)
        # The null class (== num_classes) is a valid prompt here: guidance prefills it.
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.config.num_classes):
            raise ValueError(
                f"class_labels must lie in [0, {self.config.num_classes}) (or be the null class "
                f"{self.config.num_classes}), got {labels.tolist()}"
            )
        n = self.config.cls_token_num
        embeddings = self.gpt.cls_embedding(labels)[:, None].expand(-1, n, -1)
        positions = torch.arange(n, device=self.device).expand(labels.shape[0], -1)
        out = self._output(self.gpt.run(embeddings, positions, cache), output_hidden)
        lengths = prompt.lengths.to(self.device)
        return ModelOutput(
            gather_last(out.logits, lengths), gather_last(out.hidden, lengths) if output_hidden else None
        )

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput:
        if tokens.shape != positions.shape:
            raise ValueError(f"tokens {tuple(tokens.shape)} and positions {tuple(positions.shape)} must match")
        low, high = torch.aminmax(tokens)
        # One host sync for all three checks: this runs once per step (and not at all when compiled).
        if not torch.compiler.is_compiling() and bool((positions.min() < self.config.cls_token_num) | (low < 0) | (high >= self.vocab_size)):
            if int(positions.min()) < self.config.cls_token_num:
                raise ValueError(f"positions must be >= {self.config.cls_token_num}: earlier slots hold the class")
            raise ValueError(f"tokens must lie in [0, {self.vocab_size})")
        hidden = self.gpt.run(self.gpt.tok_embeddings(tokens.to(self.device)), positions.to(self.device), cache)
        return self._output(hidden, output_hidden)

    def embedding_table(self) -> torch.Tensor:
        return self.codebook if self.codebook is not None else self.gpt.tok_embeddings.weight.detach()


class LlamaGenOutputs:
    """What the c2i and t2i LlamaGen families share: pixels from the VQ decoder, LANTERN's table from its
    codebook, GSD's from the GPT's token embeddings. Needs ``self.vq``, ``self.model.gpt`` and ``self.layout``."""

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        from .family import pixels_to_uint8

        grid = self.layout.to_grid(tokens.to(self.model.device))
        with torch.no_grad():
            return pixels_to_uint8(self.vq.decode_code(grid))

    def codebook(self) -> torch.Tensor:
        return self.vq.codebook().detach()

    def token_embeddings(self) -> torch.Tensor:
        return self.model.gpt.tok_embeddings.weight.detach()
