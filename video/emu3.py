"""Emu3 (BAAI, Wang et al. 2024, "Emu3: Next-Token Prediction is All You Need") as a video model, through
transformers' ``Emu3ForConditionalGeneration`` (checkpoints in its layout: ``BAAI/Emu3-Gen-hf``,
``BAAI/Emu3-Chat-hf``).

Emu3 writes vision as text. A clip is ``T`` latent frames of ``H x W`` VQ codes from ``Emu3VQVAE`` (each
latent frame decodes to ``temporal_downsample_factor`` video frames, 4 in the released VQ); every row ends with
the end-of-line token ``<|extra_200|>`` and every frame with the end-of-frame token ``<|extra_201|>`` (the
paper's frames-with-separators layout, which its processor writes for one frame: rows, EOL, then EOF). The
prompt is ``bos, text, <|image start|>, meta, <|image token|>`` with the processor's ``"H*W"`` meta text.
BAAI released no video-generation checkpoint nor the video meta text, so the frame count is not written in
the prompt; ``meta`` may be given for a checkpoint that defines one.

The engine generates over a compact vocabulary (codes, EOL, EOF: :class:`~mmaccel.models.subvocab.SubVocabLM`);
the layout forces the separators. The video modality's temporal inits apply with a frame of ``H * (W + 1) + 1``
slots: a new slot starts from the same slot one frame earlier (separators included, which then match).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmaccel.drafting.grid_init import GridInit, VerticalRepeat
from mmaccel.methods import build_decoder
from mmaccel.models import TokenPrompt
from mmaccel.models.hf_folder import checked_config, load_complete, read_json
from mmaccel.models.subvocab import SubVocabLM
from mmaccel.sampling import SamplingConfig

from .temporal import TemporalRepeat

#: BAAI's negative prompt (image_generation.py), the guidance counterpart of every prompt.
NEGATIVE_PROMPT = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst "
    "quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry."
)
CHECKPOINTS = ("BAAI/Emu3-Gen-hf", "BAAI/Emu3-Chat-hf")
EXPECTED = "config.json with model_type 'emu3' (Emu3ForConditionalGeneration), its weights and tokenizer"
EOL, EOF = "<|extra_200|>", "<|extra_201|>"
BOI, WRAPPER = "<|image start|>", "<|image token|>"


@dataclass(frozen=True)
class Emu3VideoLayout:
    """``frames`` latent frames of ``height`` rows of ``width`` codes; compact ids: codes ``0 .. n_codes - 1``,
    EOL ``n_codes``, EOF ``n_codes + 1``. A frame spans ``height * (width + 1) + 1`` slots."""

    frames: int
    height: int
    width: int
    n_codes: int

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width", "n_codes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Emu3 video {name} must be an integer >= 1, got {value!r}")

    @property
    def frame_tokens(self) -> int:
        return self.height * (self.width + 1) + 1

    @property
    def num_tokens(self) -> int:
        return self.frames * self.frame_tokens

    @property
    def row_tokens(self) -> int:
        """Slots of one row, EOL included (the grid the first frame's spatial init sees)."""
        return self.width + 1

    def forced(self, index: torch.Tensor) -> torch.Tensor:
        """EOL / EOF where they belong, -1 at code slots; past the clip (never committed) nothing is forced."""
        slot = index % self.frame_tokens
        eof = slot == self.frame_tokens - 1
        eol = (slot % self.row_tokens == self.width) & ~eof
        inside = (index >= 0) & (index < self.num_tokens)
        forced = torch.where(eof, self.n_codes + 1, torch.where(eol, self.n_codes, -1))
        return torch.where(inside, forced, -1)

    def grids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Compact tokens ``[B, num_tokens]`` -> codes ``[B, frames, height, width]`` (separators dropped)."""
        if tokens.dim() != 2 or tokens.shape[1] != self.num_tokens:
            raise ValueError(f"tokens must be [batch, {self.num_tokens}], got shape {tuple(tokens.shape)}")
        frames = tokens.view(tokens.shape[0], self.frames, self.frame_tokens)[..., :-1]
        return frames.reshape(*frames.shape[:2], self.height, self.row_tokens)[..., : self.width]


def emu3_inits(layout: Emu3VideoLayout) -> dict[str, Callable[[], GridInit]]:
    """The Jacobi inits that fit Emu3's layout, by name."""
    vocab = layout.n_codes + 2
    return {
        "temporal-repeat": lambda: TemporalRepeat(layout, vocab),
        "vertical": lambda: VerticalRepeat(vocab, layout.row_tokens),
    }


class Emu3Video:
    """Text-to-video with an Emu3 checkpoint: prompts, any core method over the compact vocabulary, decoding.

    >>> emu = Emu3Video.from_pretrained("Emu3-Gen-hf", frames=2, height=16, width=16)
    >>> tokens = emu.generate(["a red ball rolls"], method="mc-sjd:init=temporal-repeat")
    >>> video = emu.decode(tokens)            # uint8 [B, frames * 4, 3, 128, 128]
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        frames: int,
        height: int,
        width: int,
        meta: str | None = None,
        negative_prompt: str = NEGATIVE_PROMPT,
    ):
        self.hf_model = model.eval()
        self.tokenizer = tokenizer
        self.vq = model.model.vqmodel
        n_codes = int(model.config.vq_config.codebook_size)
        self.layout = Emu3VideoLayout(frames, height, width, n_codes)
        vocab = tokenizer.get_vocab()
        for token in (EOL, EOF, BOI, WRAPPER):
            if token not in vocab:
                raise ValueError(f"the Emu3 tokenizer has no {token!r} token")
        codes = model.vocabulary_mapping.img2bpe  # {code: token id}
        if len(codes) != n_codes or max(codes, default=-1) != n_codes - 1:
            raise ValueError(f"the Emu3 vocabulary_map has {len(codes)} visual tokens but the VQ codebook {n_codes}")
        ids = torch.cat(
            [model.vocabulary_mapping.img2bpe_mapping_tensor.long(), torch.tensor([vocab[EOL], vocab[EOF]])]
        )
        self.prefix = f"{BOI}{meta if meta is not None else f'{height}*{width}'}{WRAPPER}"
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.model = SubVocabLM(model, ids, self.layout, self.encode([negative_prompt])[0], pad)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        frames: int,
        height: int,
        width: int,
        device: str | torch.device = "cpu",
        **kw: Any,
    ) -> Emu3Video:
        """Load an ``Emu3ForConditionalGeneration`` folder; a folder of another kind fails naming what is wrong."""
        from transformers import AutoTokenizer, Emu3ForConditionalGeneration

        folder = Path(path)
        checked_config(
            folder,
            "emu3",
            "Emu3",
            EXPECTED,
            required=("vocabulary_map", "vq_config", "text_config"),
            originals={"Emu3": CHECKPOINTS[0]},
        )
        if read_json(folder / "tokenizer_config.json") is None:
            raise FileNotFoundError(f"{folder} has no tokenizer_config.json; Emu3 needs {EXPECTED}")
        model = load_complete(Emu3ForConditionalGeneration, folder, "Emu3")
        return cls(model.to(device), AutoTokenizer.from_pretrained(folder), frames, height, width, **kw)

    def encode(self, texts: list[str]) -> list[list[int]]:
        # Emu3Processor puts bos in the text itself: its GPT-style tokenizer adds no special tokens.
        strings = [f"{self.tokenizer.bos_token or ''}{text}{self.prefix}" for text in texts]
        return self.tokenizer(strings, add_special_tokens=False)["input_ids"]

    def prompt(self, texts: list[str]) -> TokenPrompt:
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("prompts must be a non-empty list of strings")
        return TokenPrompt.from_lists(self.encode(texts), self.model.pad_id).to(self.model.device)

    def build_decoder(self, method: str, sampling: SamplingConfig | None = None, guidance_scale: float = 1.0, **params):
        from mmaccel.methods import parse_method

        name, spec_params = parse_method(method, "method")
        return build_decoder(
            self.model,
            name,
            {**spec_params, **params},
            sampling=sampling,
            guidance_scale=guidance_scale,
            inits=emu3_inits(self.layout),
        )

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        method: str = "mc-sjd:init=temporal-repeat",
        seed: int = 0,
        sampling: SamplingConfig | None = None,
        guidance_scale: float = 3.0,
        progress: bool = False,
        **params: Any,
    ) -> torch.Tensor:
        """Compact tokens ``[B, num_tokens]`` of one clip per prompt (prompt ``i`` uses seed ``seed + i``)."""
        decoder = self.build_decoder(method, sampling, guidance_scale, **params)
        seeds = [seed + i for i in range(len(prompts))]
        return decoder.generate(self.prompt(prompts), self.layout.num_tokens, seeds=seeds, progress=progress).tokens

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Compact tokens -> uint8 video ``[B, frames * temporal_downsample_factor, 3, H, W]`` (Emu3VQVAE)."""
        grids = self.layout.grids(tokens.to(self.model.device))
        if bool((grids >= self.layout.n_codes).any()):
            raise ValueError(f"a code slot holds a separator (code ids must be < {self.layout.n_codes})")
        video = torch.cat([self.vq.decode(g).float() for g in grids.split(1)])
        # Emu3ImageProcessor.postprocess with its mean = std = 0.5: unnormalise, scale, clip.
        return ((video * 0.5 + 0.5) * 255).clamp(0, 255).to(torch.uint8).cpu()


__all__ = ["CHECKPOINTS", "Emu3Video", "Emu3VideoLayout", "emu3_inits"]
