"""What the image pipeline needs from a model family, and the pieces every family shares.

A *family* (LlamaGen c2i, LlamaGen t2i, Janus-Pro, Lumina-mGPT and Anole on Chameleon, Emu3) bundles:

* ``model``: a :class:`~mmaccel.models.TokenModel` over the family's **image vocabulary**: ids
  ``0 .. n_codes - 1`` are the VQ codes and, for families whose rows end with an end-of-line token, id
  ``n_codes`` is that token (``layout.row_end``). Unified-vocabulary models (Chameleon, Emu3) map these
  compact ids to their own token ids inside the adapter, so the acceptance rules work on ``n_codes + 1``
  probabilities instead of the whole text + image vocabulary, and the adapter itself keeps every
  non-image token out (no transformers logits masking is relied on);
* ``layout``: the :class:`TokenLayout` of the generated sequence (grid size, optional row-end token);
* a prompt builder (class labels or text), the decoder from tokens to pixels, and the embedding tables
  that say which image tokens are near each other (LANTERN: the VQ codebook; GSD: the model's own
  embedding of image tokens).

:func:`load_family` recognises a checkpoint folder and returns its family; unknown folders fail with a
message naming what was looked for.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from mmaccel.models import TokenModel
from mmaccel.models.hf_folder import read_json


@dataclass(frozen=True)
class TokenLayout:
    """Where image tokens sit in a generated sequence: ``height`` rows of ``width`` codes in raster order,
    each row followed by the ``row_end`` token when the family has one (Lumina-mGPT, Emu3)."""

    height: int
    width: int
    row_end: int | None = None

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"layout height and width must be >= 1, got {self.height} x {self.width}")

    @property
    def row_length(self) -> int:
        return self.width + (self.row_end is not None)

    @property
    def num_tokens(self) -> int:
        """Generated tokens per image, row-end tokens included."""
        return self.height * self.row_length

    @property
    def grid(self) -> tuple[int, int]:
        return self.height, self.width

    def is_row_end(self, index: torch.Tensor) -> torch.Tensor:
        """Whether generated-token ``index`` is a row-end slot (all False without row-end tokens)."""
        if self.row_end is None:
            return torch.zeros_like(index, dtype=torch.bool)
        return index % self.row_length == self.width

    def to_grid(self, values: torch.Tensor) -> torch.Tensor:
        """``[B, num_tokens, ...]`` (tokens, accept steps) -> ``[B, height, width, ...]`` without row ends."""
        if values.shape[1] != self.num_tokens:
            raise ValueError(f"expected {self.num_tokens} generated tokens per image, got {values.shape[1]}")
        rows = values.reshape(values.shape[0], self.height, self.row_length, *values.shape[2:])
        return rows[:, :, : self.width]

    def constrain(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Force the layout on ``logits [B, T, V]`` that choose generated tokens ``index [B, T]``.

        At a row-end slot only ``row_end`` is allowed; elsewhere ``row_end`` is forbidden. Indices outside
        ``[0, num_tokens)`` (positions past the image, which the engine never commits) are left alone.
        """
        if self.row_end is None:
            return logits
        inside = (index >= 0) & (index < self.num_tokens)
        at_end = self.is_row_end(index) & inside
        is_end_id = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        is_end_id[self.row_end] = True
        blocked = torch.where(at_end[..., None], ~is_end_id, is_end_id & inside[..., None])
        return logits.masked_fill(blocked, float("-inf"))

    def with_row_end(self, table: torch.Tensor) -> torch.Tensor:
        """Append a row for the row-end token to a ``[n_codes, D]`` embedding table, placed far from every
        code (one extra dimension), so no image token counts it as a neighbour."""
        if self.row_end is None:
            return table
        if table.shape[0] != self.row_end:
            raise ValueError(f"table has {table.shape[0]} rows; the row-end id {self.row_end} must come next")
        far = 10.0 * float(table.norm(dim=-1).max()) + 1.0
        padded = torch.nn.functional.pad(table.float(), (0, 1))
        end = torch.zeros(1, padded.shape[1], dtype=padded.dtype, device=padded.device)
        end[0, -1] = far
        return torch.cat([padded, end])


@runtime_checkable
class ImageFamily(Protocol):
    """The contract between :class:`~mmaccel.image.pipeline.ImageARPipeline` and a model family."""

    name: str
    model: TokenModel  # over the image vocabulary; exposes unconditional_prompt() for guidance
    draft: TokenModel | None
    layout: TokenLayout
    conditioning: str  # "class" or "text"
    always_guided: bool  # Janus-Pro: guidance is part of the model, scale 1 is not allowed to skip it
    cache_dir: Path | None  # where neighbour tables are kept (beside the checkpoint)

    @property
    def num_classes(self) -> int | None: ...

    def prompt(self, class_labels: list[int] | None = None, prompts: list[str] | None = None) -> Any:
        """The conditional prompt; the wrong kind of condition for this family raises ValueError."""
        ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, num_tokens]`` generated tokens -> uint8 images ``[B, H, W, 3]``."""
        ...

    def codebook(self) -> torch.Tensor:
        """``[vocab, D]`` VQ code vectors (row-end row included) that define LANTERN's neighbours."""
        ...

    def token_embeddings(self) -> torch.Tensor:
        """``[vocab, D]`` the model's input embeddings of its image tokens (row-end row included), for GSD."""
        ...

    def to(self, device: str | torch.device) -> ImageFamily: ...


# --------------------------------------------------------------------------------- shared by families


def pixels_to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """A VQ decoder's ``[B, 3, H, W]`` output in [-1, 1] -> uint8 ``[B, H, W, 3]`` on the CPU."""
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu()


def hf_model_type(folder: Path) -> str | None:
    """The ``model_type`` of a Hugging Face checkpoint folder, or None when it has no readable config.json."""
    config = read_json(Path(folder) / "config.json") if Path(folder).is_dir() else None
    return None if config is None else str(config.get("model_type", ""))


def text_prompts(class_labels: Any, prompts: Any, model: str = "this") -> list[str]:
    """The validated prompts of a call to a text-to-image family (a class label is the wrong condition)."""
    if class_labels is not None:
        raise ValueError(f"{model} is a text-to-image model: pass prompt=[...], not class_labels")
    if prompts is None:
        raise ValueError(f"a text prompt is required for {model} text-to-image model")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompts!r}")
    return prompts


# ----------------------------------------------------------------------------------------- recognition

#: Family name -> "module:Class". Each class has ``matches(folder) -> bool`` and
#: ``from_pretrained(folder, device) -> family``; they are tried in this order.
FAMILIES: dict[str, str] = {
    "llamagen": "mmaccel.image.llamagen_c2i:LlamaGenC2IFamily",
    "llamagen-t2i": "mmaccel.image.llamagen_t2i:LlamaGenT2IFamily",
    "janus": "mmaccel.image.janus:JanusFamily",
    "anole": "mmaccel.image.anole:AnoleFamily",  # before "chameleon": both read HF Chameleon folders
    "chameleon": "mmaccel.image.chameleon:ChameleonFamily",
    "emu3": "mmaccel.image.emu3:Emu3Family",
}


def family_class(name: str) -> type:
    if name not in FAMILIES:
        raise ValueError(f"unknown image model family {name!r}; choose one of {list(FAMILIES)}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_family(path: str | os.PathLike, device: str | torch.device = "cpu", family: str | None = None) -> Any:
    """The family that recognises the checkpoint folder (or file) ``path``, loaded on ``device``.

    ``family`` skips recognition and loads that family (a mismatch then fails inside its loader with the
    file and key that do not fit).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model path not found: {path}")
    if family is not None:
        return family_class(family).from_pretrained(path, device)
    for name in FAMILIES:
        try:
            cls = family_class(name)
        except ImportError:  # a family whose optional dependency is missing cannot be the one
            continue
        if cls.matches(path):
            return cls.from_pretrained(path, device)
    raise ValueError(
        f"{path} holds no recognisable image model checkpoint; looked for: "
        + "; ".join(f"{name}: {family_class_hint(name)}" for name in FAMILIES)
    )


def family_class_hint(name: str) -> str:
    try:
        return family_class(name).expected_files
    except (ImportError, AttributeError):
        return "(unavailable)"
