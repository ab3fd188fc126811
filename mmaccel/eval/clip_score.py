"""CLIP score (Hessel et al. 2021): 100 x max(cos(image, text), 0) with transformers' ``CLIPModel``.

torchmetrics' CLIPScore calls ``get_image_features`` and expects a tensor, which transformers 5 returns as an
output object; the projected embeddings of ``CLIPModel.forward`` (``image_embeds``, ``text_embeds``) are read here
instead, and the definition is torchmetrics' (the mean over pairs of 100 x the clipped cosine).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def load_clip(folder: str | os.PathLike):
    """``CLIPModel`` and ``CLIPProcessor`` from a local folder; nothing is downloaded."""
    from transformers import CLIPModel, CLIPProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a loading bar between the command's lines tells the user nothing
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--model {str(folder)!r} is not a CLIP folder (no config.json)")
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"--model {str(folder)!r}: cannot load a CLIP model and processor: {err}") from None
    return model, processor


@torch.no_grad()
def clip_scores(model, processor, images: np.ndarray, prompts: list[str], batch: int = 32) -> torch.Tensor:
    """Per-pair CLIP scores ``[N]`` of uint8 images ``[N, H, W, 3]`` against ``prompts``."""
    if len(images) != len(prompts):
        raise ValueError(f"--prompts has {len(prompts)} prompts for {len(images)} images; give one a line per image")
    scores = []
    for start in range(0, len(images), batch):
        inputs = processor(
            text=prompts[start : start + batch],
            images=list(images[start : start + batch]),
            return_tensors="pt",
            padding=True,
            truncation=True,
        )
        out = model(**inputs)
        image = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        text = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        scores.append(100 * (image * text).sum(-1).clamp(min=0))
    return torch.cat(scores)
