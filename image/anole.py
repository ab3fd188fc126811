"""Anole text-to-image on the Chameleon architecture, as an image family.

Anole (Chern et al. 2024) fine-tunes Chameleon's image-token head for image generation. Its layout differs from
Lumina-mGPT's (:mod:`mmaccel.image.chameleon`): no prompt template, no size tokens and no end-of-line tokens.
As in LANTERN's Anole code (jadohu/LANTERN, ``models/ea_model_anole.py``) the prompt is ``<bos>`` + the prompt
text + ``<reserved08706>`` + ``<racm3:break>`` (image start), the model writes a 32 x 32 grid of VQ codes
(512 px, Chameleon's VQGAN), and the unconditional context for guidance is ``<bos>`` ``<racm3:break>``.

An HF Chameleon folder cannot say whether it holds Lumina-mGPT or Anole weights, so a folder is taken for
Anole when its name (or its config's ``_name_or_path``) says "anole"; ``family="anole"`` forces it.
"""

from __future__ import annotations

from pathlib import Path

from mmaccel.models.base import TokenPrompt

from .chameleon import IMAGE_START, SEPARATOR, ChameleonFamily
from .family import TokenLayout, text_prompts
from .hf_folder import hf_config


class AnoleFamily(ChameleonFamily):
    """Anole (Chern et al. 2024): Chameleon restricted to its image tokens, a plain raster grid of codes."""

    name = "anole"
    row_ends = False
    expected_files = (
        "an HF Chameleon folder named *anole* (config.json with model_type 'chameleon' + model*.safetensors + "
        "tokenizer.json, + tokenizer/vqgan.ckpt and vqgan.yaml to decode)"
    )

    @classmethod
    def matches(cls, path: Path) -> bool:
        config = hf_config(path) or {}
        if config.get("model_type") != "chameleon":
            return False
        return "anole" in Path(path).name.lower() or "anole" in str(config.get("_name_or_path", "")).lower()

    def set_image_size(self, height: int, width: int) -> None:
        """Generate ``height`` x ``width`` pixel images (Anole was tuned at 512 x 512 only)."""
        f = self.downsample
        if height < f or width < f or height % f or width % f:
            raise ValueError(f"image height and width must be positive multiples of {f} px, got {height} x {width}")
        self.image_size = (height, width)
        self.layout = TokenLayout(height // f, width // f)
        self.model.layout = self.layout
        self.model.uncond_ids = [self.bos_id, self.token_id(IMAGE_START)]

    def prompt(self, class_labels: list[int] | None = None, prompts: list[str] | None = None) -> TokenPrompt:
        rows = []
        for text in text_prompts(class_labels, prompts, "Anole"):
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            rows.append([self.bos_id, *ids, self.token_id(SEPARATOR), self.token_id(IMAGE_START)])
        return TokenPrompt.from_lists(rows)


__all__ = ["AnoleFamily"]
