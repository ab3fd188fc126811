"""Emu3 (BAAI, Wang et al. 2024, "Emu3: Next-Token Prediction is All You Need") as an image family, through
transformers' ``Emu3ForConditionalGeneration`` (checkpoints in its layout, e.g. ``BAAI/Emu3-Gen-hf``).

Emu3 writes an image as text: ``bos, prompt, <|image start|>, "H*W", <|image token|>``, then ``H`` rows of ``W``
visual tokens each closed by the end-of-line token ``<|extra_200|>``, then eof / eoi / eos. Everything up to the
image-wrapper token is the prompt here; the engine generates the ``H * (W + 1)`` grid tokens over a compact
vocabulary (VQ codes ``0 .. n_codes - 1``, EOL = ``n_codes``) that the adapter maps to Emu3's token ids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mmaccel.models import TokenPrompt
from mmaccel.models.subvocab import SubVocabLM

from .family import TokenLayout, hf_model_type, read_json, text_prompts
from .hf_folder import checked_config, load_complete

#: The negative prompt of BAAI's image_generation.py (guidance counterpart of every prompt).
NEGATIVE_PROMPT = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst "
    "quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry."
)
#: Emu3Processor's defaults: a square image of 720 x 720 pixels (Emu3-Gen's config has image_area 518400).
DEFAULT_IMAGE_AREA = 518400
DEFAULT_RATIO = "1:1"
# Emu3's special tokens (tokenizer attributes in transformers; these literal names where a tokenizer lacks them).
_SPECIAL = {"boi_token": "<|image start|>", "image_wrapper_token": "<|image token|>"}


def generation_grid(image_area: int, ratio: str, spatial_factor: int) -> tuple[int, int]:
    """Token rows and columns of a generated image, as ``Emu3Processor.calculate_generate_size`` computes them."""
    width, height = map(int, ratio.split(":"))
    scale = (image_area / (width * height)) ** 0.5
    return int(round(height * scale / spatial_factor)), int(round(width * scale / spatial_factor))


class Emu3ImageLM(SubVocabLM):
    """Emu3's language model over its image vocabulary, driven through a :class:`SlotCache`.

    Compact id ``i < n_codes`` is the visual token of VQ code ``i``, id ``n_codes`` is end-of-line; ``token_ids``
    maps them to Emu3's ids. Only those rows of ``lm_head`` are multiplied, so text tokens cannot be sampled, and
    the :class:`TokenLayout` forces EOL at the end of every row and nowhere else. Prompts hold Emu3 token ids.
    (The compact-vocabulary machinery is the core's :class:`~mmaccel.models.subvocab.SubVocabLM`.)
    """

    def __init__(self, model: Any, token_ids: torch.Tensor, layout: TokenLayout, uncond_ids: list[int], pad_id: int):
        super().__init__(model, token_ids, layout, uncond_ids, pad_id)

    def constrain(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # A finite floor instead of -inf: guidance subtracts the two rows (-inf - -inf is NaN), and equal floors cancel.
        return self.layout.constrain(logits, index).clamp_min(torch.finfo(logits.dtype).min)

    def embedding_table(self) -> torch.Tensor:
        embed = self.model.get_input_embeddings().weight.detach()
        return self.layout.with_row_end(embed.index_select(0, self.token_ids[:-1].to(embed.device)))


class Emu3Family:
    """Emu3-Gen text-to-image (Wang et al. 2024): one decoder-only transformer over text and VQ tokens, rows
    closed by end-of-line tokens, pixels from Emu3's VQ-VAE decoder. The folder holds no draft; a smaller Emu3
    checkpoint can be given as one (``from_pretrained(draft=...)``)."""

    name = "emu3"
    conditioning = "text"
    always_guided = False
    expected_files = "config.json with model_type 'emu3' (Emu3ForConditionalGeneration), its weights and tokenizer"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_area: int = DEFAULT_IMAGE_AREA,
        ratio: str = DEFAULT_RATIO,
        image_mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        image_std: tuple[float, ...] = (0.5, 0.5, 0.5),
        negative_prompt: str = NEGATIVE_PROMPT,
        cache_dir: Path | None = None,
    ):
        self.hf_model = model.eval()
        self.tokenizer = tokenizer
        self.vq = model.model.vqmodel
        self.n_codes = int(model.config.vq_config.codebook_size)
        self.height, self.width = generation_grid(image_area, ratio, self.vq.vision_spatial_factor)
        self.layout = TokenLayout(self.height, self.width, row_end=self.n_codes)
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1)
        self.draft = None
        self.cache_dir = cache_dir
        self._prefix = self._image_prefix()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.model = Emu3ImageLM(model, self._token_ids(model), self.layout, [], pad)
        self.negative_prompt = negative_prompt

    # ---------------------------------------------------------------------------------------------- loading

    @classmethod
    def matches(cls, path: Path) -> bool:
        # "Emu3" (BAAI's original layout) matches too, so that loading it fails with the hint to convert it.
        return (hf_model_type(Path(path)) or "").lower() == "emu3"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Emu3Family:
        from transformers import AutoTokenizer, Emu3ForConditionalGeneration

        folder = Path(path)
        config = checked_config(
            folder,
            "emu3",
            "Emu3",
            cls.expected_files,
            required=("vocabulary_map", "vq_config", "text_config"),
            originals={"Emu3": "BAAI/Emu3-Gen-hf"},
        )
        model = load_complete(Emu3ForConditionalGeneration, folder, "Emu3")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        processor = read_json(folder / "preprocessor_config.json") or {}
        return cls(
            model,
            tokenizer,
            image_area=int(config.get("image_area", DEFAULT_IMAGE_AREA)),
            image_mean=tuple(processor.get("image_mean", (0.5, 0.5, 0.5))),
            image_std=tuple(processor.get("image_std", (0.5, 0.5, 0.5))),
            cache_dir=folder,
        ).to(device)

    def _token_ids(self, model: Any) -> torch.Tensor:
        """Emu3 ids of the compact vocabulary: the visual token of each VQ code, then end-of-line."""
        mapping = model.vocabulary_mapping
        if mapping.eol_token_id is None:
            raise ValueError("the Emu3 config's vocabulary_map has no end-of-line token '<|extra_200|>'")
        codes = mapping.img2bpe  # {code: token id}, from the '<|visual token NNNNNN|>' entries
        if len(codes) != self.n_codes or max(codes, default=-1) != self.n_codes - 1:
            raise ValueError(
                f"the Emu3 vocabulary_map has {len(codes)} visual tokens (codes up to {max(codes, default=-1)}) but "
                f"the VQ codebook has {self.n_codes} codes"
            )
        ids = torch.cat([mapping.img2bpe_mapping_tensor.long(), torch.tensor([mapping.eol_token_id])])
        rows = model.get_output_embeddings().weight.shape[0]
        if int(ids.max()) >= rows:
            raise ValueError(f"image token id {int(ids.max())} is outside lm_head's {rows} rows")
        return ids

    def _image_prefix(self) -> str:
        """What Emu3 reads before the first visual token: image start, ``"H*W"``, the image wrapper token."""
        tok = self.tokenizer
        start, wrapper = (getattr(tok, name, None) or default for name, default in _SPECIAL.items())
        for token in (start, wrapper):
            if token not in tok.get_vocab():
                raise ValueError(f"the Emu3 tokenizer has no {token!r} token")
        return f"{start}{self.height}*{self.width}{wrapper}"

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # Emu3Processor puts bos in the text itself: its GPT-style tokenizer adds no special tokens.
        strings = [f"{self.tokenizer.bos_token or ''}{text}{self._prefix}" for text in texts]
        return self.tokenizer(strings, add_special_tokens=False)["input_ids"]

    @property
    def negative_prompt(self) -> str:
        return self._negative_prompt

    @negative_prompt.setter
    def negative_prompt(self, text: str) -> None:
        self._negative_prompt = text
        self.model.uncond_ids = self._encode([text])[0]

    # ------------------------------------------------------------------------------------------ the contract

    def to(self, device: str | torch.device) -> Emu3Family:
        self.hf_model.to(device)
        self.model.token_ids = self.model.token_ids.to(device)
        return self

    @property
    def num_classes(self) -> None:
        return None

    def prompt(self, class_labels: list[int] | None = None, prompts: list[str] | None = None) -> TokenPrompt:
        prompts = text_prompts(class_labels, prompts, "Emu3")
        return TokenPrompt.from_lists(self._encode(prompts), self.model.pad_id)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        grid = self.layout.to_grid(tokens.to(self.model.device))
        if bool((grid >= self.n_codes).any()):
            raise ValueError(f"an image slot holds a non-image token (ids must be < {self.n_codes})")
        # One image at a time: the decoder upsamples to temporal_downsample_factor frames at full resolution.
        pixels = torch.cat([self.vq.decode(codes).float() for codes in grid.split(1)])
        # Emu3ImageProcessor.postprocess: unnormalise, scale to 0..255, clip, truncate to uint8.
        pixels = (pixels * self.image_std.to(pixels.device) + self.image_mean.to(pixels.device)) * 255
        return pixels.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()

    def codebook(self) -> torch.Tensor:
        return self.layout.with_row_end(self.vq.quantize.embedding.weight.detach())

    def token_embeddings(self) -> torch.Tensor:
        # Emu3's own EOL embedding could lie near some codes; with_row_end keeps it out of every neighbourhood.
        return self.model.embedding_table()


__all__ = ["DEFAULT_IMAGE_AREA", "NEGATIVE_PROMPT", "Emu3Family", "Emu3ImageLM", "generation_grid"]
