"""LlamaGen text-to-image (t2i) as an image family: official t2i files and flan-t5-xl captions.

Sun et al. 2024, "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation". The GPT is
:class:`~mmaccel.image.llamagen.LlamaGenGPT` with ``model_type="t2i"``: its condition is a caption of
``cls_token_num`` (120) T5 encoder features, projected by ``cls_embedding.cap_proj``. As in the official
``sample_t2i.py`` / ``generate()``:

* captions are tokenized to at most 120 tokens (longer ones are truncated) and encoded by a T5 encoder
  (flan-t5-xl, ``d_model`` 2048); the features are then **left-padded**: each caption's real tokens move
  to the last slots, padding slots are zeroed, and no later position attends to a padding slot;
* the unconditional row for guidance is the learned ``cls_embedding.uncond_embedding`` at all 120 slots,
  with the *conditional* caption's padding mask (the official code masks both rows alike).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mmaccel.checkpoint import read_state_dict
from mmaccel.models.base import ModelOutput

from .family import TokenLayout, text_prompts
from .llamagen import (
    GPT_CONFIGS,
    ConditionCache,
    GPTConfig,
    LlamaGenGPT,
    LlamaGenModel,
    LlamaGenOutputs,
    gpt_config,
    load_llamagen,
)
from mmaccel.models.vq import VQModel

# Official file names: t2i_XL_stage1_256.pt / t2i_XL_stage2_512.pt beside vq_ds16_t2i.pt, and the T5
# encoder in pretrained_models/t5-ckpt/flan-t5-xl. Any size named in GPT_CONFIGS is accepted.
_OFFICIAL_GPT = re.compile(r"t2i_([A-Za-z0-9]+)_(?:stage\d+_)?(\d+)\.pt")
_OFFICIAL_VQ = "vq_ds16_t2i.pt"
_DOWNSAMPLE = 16  # the released t2i VQ is ds16: resolution / 16 tokens per side


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def declares_t2i(config_path: Path) -> bool:
    """Whether a ``gpt_config.json`` (or ``draft_config.json``) describes a t2i GPT."""
    return config_path.is_file() and _read_json(config_path).get("model_type") == "t2i"


def find_t5_folder(folder: Path) -> Path | None:
    """The T5 encoder folder inside ``folder``: a subfolder (``flan-t5-xl/``, ``t5/``, or the official
    ``t5-ckpt/flan-t5-xl/``) whose ``config.json`` has ``model_type`` ``"t5"``."""
    for config in sorted(folder.glob("*/config.json")) + sorted(folder.glob("t5-ckpt/*/config.json")):
        if _read_json(config).get("model_type") == "t5":
            return config.parent
    return None


def infer_t2i_config(checkpoint: Path) -> GPTConfig:
    """The config of an official t2i checkpoint, from its file name (size, resolution) and its shapes."""
    match = _OFFICIAL_GPT.fullmatch(checkpoint.name)
    if match is None:
        raise ValueError(f"cannot tell the config of {checkpoint}: no <name>_config.json beside it")
    size = f"GPT-{match.group(1)}"
    if size not in GPT_CONFIGS:
        raise ValueError(f"unknown GPT size {match.group(1)!r} in {checkpoint.name}; known: {sorted(GPT_CONFIGS)}")
    state = read_state_dict(checkpoint)
    for key in ("tok_embeddings.weight", "cls_embedding.cap_proj.fc1.weight", "cls_embedding.uncond_embedding"):
        if key not in state:
            raise ValueError(f"{checkpoint} is not a LlamaGen t2i checkpoint: it has no {key!r}")
    grid = int(match.group(2)) // _DOWNSAMPLE
    return gpt_config(
        size,
        model_type="t2i",
        vocab_size=state["tok_embeddings.weight"].shape[0],
        caption_dim=state["cls_embedding.cap_proj.fc1.weight"].shape[1],
        cls_token_num=state["cls_embedding.uncond_embedding"].shape[0],
        block_size=grid * grid,
    )


@dataclass
class CaptionPrompt:
    """Left-padded caption features ``[B, n, caption_dim]`` (zeros at padding) and ``valid`` ``[B, n]``,
    True at real caption slots. Every row occupies all ``n`` condition positions."""

    embeddings: torch.Tensor
    valid: torch.Tensor

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 3:
            raise ValueError(f"caption features must be [batch, tokens, dim], got {tuple(self.embeddings.shape)}")
        if self.valid.shape != self.embeddings.shape[:2]:
            raise ValueError(
                f"caption mask {tuple(self.valid.shape)} must match the features' {tuple(self.embeddings.shape[:2])}"
            )
        self.valid = self.valid.bool()
        b, n = self.valid.shape
        self.lengths = torch.full((b,), n, dtype=torch.long, device=self.valid.device)

    @property
    def batch_size(self) -> int:
        return self.embeddings.shape[0]

    def cat(self, other: CaptionPrompt) -> CaptionPrompt:
        if other.embeddings.shape[1:] != self.embeddings.shape[1:]:
            raise ValueError("cannot concatenate caption prompts of different lengths or widths")
        device = self.embeddings.device
        return CaptionPrompt(
            torch.cat([self.embeddings, other.embeddings.to(device)]), torch.cat([self.valid, other.valid.to(device)])
        )

    def to(self, device: torch.device | str) -> CaptionPrompt:
        return CaptionPrompt(self.embeddings.to(device), self.valid.to(device))


class LlamaGenT2IModel(LlamaGenModel):
    """A LlamaGen t2i GPT behind the engine's :class:`~mmaccel.models.TokenModel` contract.

    Positions ``0 .. cls_token_num - 1`` hold the caption (its padding hidden by a
    :class:`~mmaccel.image.llamagen.ConditionCache`), position ``cls_token_num + i`` image token ``i``.
    """

    def __init__(self, gpt: LlamaGenGPT, codebook: torch.Tensor | None = None):
        if gpt.config.model_type != "t2i":
            raise ValueError(f"LlamaGenT2IModel needs a t2i GPT, got model_type {gpt.config.model_type!r}")
        super().__init__(gpt, codebook)

    def class_prompt(self, class_labels) -> CaptionPrompt:
        raise ValueError("this is a text-to-image model: pass a text prompt, not class_labels")

    def unconditional_prompt(self, prompt: CaptionPrompt) -> CaptionPrompt:
        """``uncond_embedding`` in every row, under each row's conditional padding mask (official CFG)."""
        null = self.gpt.cls_embedding.uncond_embedding.to(prompt.embeddings)
        return CaptionPrompt(null.expand(prompt.batch_size, -1, -1), prompt.valid)

    def new_cache(self, batch_size: int, max_length: int) -> ConditionCache:
        return ConditionCache(max_length)

    @torch.no_grad()
    def prefill(self, prompt: CaptionPrompt, cache: ConditionCache, output_hidden: bool = False) -> ModelOutput:
        n, width = self.config.cls_token_num, self.config.caption_dim
        if tuple(prompt.embeddings.shape[1:]) != (n, width):
            raise ValueError(f"caption features must be [batch, {n}, {width}], got {tuple(prompt.embeddings.shape)}")
        if not isinstance(cache, ConditionCache):
            raise TypeError("a t2i prompt needs the ConditionCache from new_cache() to mask caption padding")
        cache.condition_valid = prompt.valid.to(self.device)
        captions = prompt.embeddings.to(self.device, self.gpt.output.weight.dtype)
        positions = torch.arange(n, device=self.device).expand(prompt.batch_size, -1)
        hidden = self.gpt.run(self.gpt.cls_embedding(captions), positions, cache)
        # Left padding puts every caption's end in the last slot.
        return self._output(hidden[:, -1:], output_hidden)


class T5CaptionEncoder:
    """The T5 encoder (flan-t5-xl, Chung et al. 2022, in the official setup) that turns captions into the
    features LlamaGen t2i conditions on, at most ``max_tokens`` tokens each (longer captions are truncated).

    Captions are lower-cased and their whitespace collapsed: the lower-casing part of the official
    ``T5Embedder.clean_caption`` (its URL/HTML/punctuation scrubbing is not reproduced).
    """

    def __init__(self, tokenizer, encoder: torch.nn.Module, max_tokens: int):
        self.tokenizer, self.encoder, self.max_tokens = tokenizer, encoder.eval(), int(max_tokens)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, max_tokens: int) -> T5CaptionEncoder:
        from transformers import AutoTokenizer, T5EncoderModel

        folder = Path(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"cannot load the T5 tokenizer from {folder}: {err}") from err
        try:
            encoder = T5EncoderModel.from_pretrained(str(folder), local_files_only=True).float()
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load the T5 encoder weights from {folder}: {err}") from err
        return cls(tokenizer, encoder, max_tokens)

    @property
    def d_model(self) -> int:
        return int(self.encoder.config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def to(self, device: str | torch.device) -> T5CaptionEncoder:
        self.encoder.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> CaptionPrompt:
        """Left-padded features ``[B, max_tokens, d_model]`` of ``prompts`` and their slot mask."""
        texts = [" ".join(p.lower().split()) for p in prompts]
        batch = self.tokenizer(
            texts,
            max_length=self.max_tokens,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        features = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        # A stable sort on the mask puts padding first and keeps the tokens' order: left padding, whichever
        # side the tokenizer padded.
        order = torch.argsort(mask.int(), dim=1, stable=True)
        valid = mask.gather(1, order).bool()
        features = features.gather(1, order[..., None].expand_as(features)) * valid[..., None]
        return CaptionPrompt(features, valid)


class LlamaGenT2IFamily(LlamaGenOutputs):
    """LlamaGen text-to-image models (Sun et al. 2024, "Autoregressive Model Beats Diffusion"): a GPT over
    VQ-16 codes conditioned on 120 left-padded T5 caption features, an optional draft GPT, the T5 encoder
    and the VQ decoder."""

    name = "llamagen-t2i"
    conditioning = "text"
    always_guided = False
    expected_files = (
        f"t2i_<size>_<stage>_<res>.pt (or gpt.safetensors + gpt_config.json with model_type t2i) + {_OFFICIAL_VQ} "
        "(or vq.safetensors) + a T5 encoder subfolder (flan-t5-xl/, t5/ or t5-ckpt/flan-t5-xl/)"
    )

    def __init__(
        self,
        model: LlamaGenT2IModel,
        vq: VQModel,
        text: T5CaptionEncoder,
        draft: LlamaGenT2IModel | None = None,
        cache_dir: Path | None = None,
    ):
        if vq.codebook().shape[0] != model.vocab_size:
            raise ValueError(
                f"the VQ codebook has {vq.codebook().shape[0]} codes but the GPT's vocabulary is {model.vocab_size}"
            )
        if text.d_model != model.config.caption_dim:
            raise ValueError(
                f"the T5 encoder's d_model is {text.d_model} but the GPT's caption_dim "
                f"(cls_embedding.cap_proj.fc1 input) is {model.config.caption_dim}"
            )
        if text.max_tokens != model.config.cls_token_num:
            raise ValueError(
                f"captions of {text.max_tokens} tokens do not fill the GPT's {model.config.cls_token_num} slots"
            )
        if draft is not None:
            for field in ("cls_token_num", "caption_dim", "vocab_size", "block_size"):
                if getattr(draft.config, field) != getattr(model.config, field):
                    raise ValueError(
                        f"draft {field} ({getattr(draft.config, field)}) differs from the GPT's "
                        f"({getattr(model.config, field)})"
                    )
        self.model, self.vq, self.text, self.draft = model, vq.eval(), text, draft
        self.layout = TokenLayout(model.grid_size, model.grid_size)
        self.cache_dir = cache_dir

    @staticmethod
    def _gpt_file(folder: Path) -> Path | None:
        gpt = folder / "gpt.safetensors"
        if gpt.is_file() and declares_t2i(folder / "gpt_config.json"):
            return gpt
        return next((p for p in sorted(folder.glob("t2i_*.pt")) if _OFFICIAL_GPT.fullmatch(p.name)), None)

    @staticmethod
    def _vq_file(folder: Path) -> Path | None:
        for name in ("vq.safetensors", _OFFICIAL_VQ):
            if (folder / name).is_file():
                return folder / name
        return None

    @classmethod
    def matches(cls, path: Path) -> bool:
        """A folder holding a t2i GPT (official ``t2i_*.pt``, or ``gpt.safetensors`` whose config says t2i)."""
        path = Path(path)
        return path.is_dir() and cls._gpt_file(path) is not None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> LlamaGenT2IFamily:
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        gpt_path, vq_path, t5_path = cls._gpt_file(folder), cls._vq_file(folder), find_t5_folder(folder)
        for label, found, wanted in (
            ("t2i GPT", gpt_path, "t2i_<size>_<stage>_<res>.pt, or gpt.safetensors + t2i gpt_config.json"),
            ("VQ", vq_path, f"vq.safetensors or {_OFFICIAL_VQ}"),
            ("T5 encoder", t5_path, "a subfolder such as flan-t5-xl/ with a t5 config.json, weights, tokenizer"),
        ):
            if found is None:
                raise FileNotFoundError(f"model folder {folder} has no {label} ({wanted})")
        config = gpt_path.with_name(f"{gpt_path.stem}_config.json")
        gpt = load_llamagen(gpt_path, config if config.is_file() else infer_t2i_config(gpt_path))
        model = LlamaGenT2IModel(gpt)
        vq_config = vq_path.with_name(f"{vq_path.stem}_config.json")
        # The released VQ ships without a config: VQ-16 unless a config sits beside the weights.
        vq = VQModel.from_pretrained(vq_path, None if vq_config.is_file() else "VQ-16")
        text = T5CaptionEncoder.from_pretrained(t5_path, model.config.cls_token_num)
        draft = None
        if (folder / "draft.safetensors").is_file():
            draft = LlamaGenT2IModel(load_llamagen(folder / "draft.safetensors"))
        return cls(model, vq, text, draft, cache_dir=folder).to(device)

    def to(self, device: str | torch.device) -> LlamaGenT2IFamily:
        self.model.gpt.to(device)
        self.vq.to(device)
        self.text.to(device)
        if self.draft is not None:
            self.draft.gpt.to(device)
        return self

    @property
    def num_classes(self) -> None:
        return None

    def prompt(self, class_labels: list[int] | None = None, prompts: list[str] | None = None) -> CaptionPrompt:
        """Caption features for ``prompts`` (each truncated to ``cls_token_num`` = 120 T5 tokens)."""
        return self.text.encode(text_prompts(class_labels, prompts, "LlamaGen t2i"))


__all__ = [
    "CaptionPrompt",
    "LlamaGenT2IFamily",
    "LlamaGenT2IModel",
    "T5CaptionEncoder",
    "declares_t2i",
    "find_t5_folder",
    "infer_t2i_config",
]
