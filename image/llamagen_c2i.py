"""LlamaGen class-conditional (c2i) as an image family: the shipped default model and official c2i files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from mmaccel.checkpoint import read_state_dict

from .family import TokenLayout
from .llamagen import GPT_CONFIGS, GPTConfig, LlamaGenModel, LlamaGenOutputs, gpt_config, load_llamagen
from .llamagen_t2i import LlamaGenT2IFamily
from mmaccel.models.vq import VQModel

# Official file names: c2i_{B,L,XL,XXL,3B}_{256,384}.pt beside vq_ds16_c2i.pt.
_OFFICIAL_GPT = re.compile(r"c2i_(B|L|XL|XXL|3B)_(\d+)\.pt$")
_OFFICIAL_VQ = "vq_ds16_c2i.pt"


def infer_c2i_config(checkpoint: Path) -> GPTConfig:
    """The config of an official c2i checkpoint, from its file name (size and resolution) and its shapes."""
    match = _OFFICIAL_GPT.search(checkpoint.name)
    if match is None:
        raise ValueError(f"cannot tell the config of {checkpoint}: no <name>_config.json beside it")
    state = read_state_dict(checkpoint)
    for key in ("tok_embeddings.weight", "cls_embedding.embedding_table.weight"):
        if key not in state:
            raise ValueError(f"{checkpoint} is not a LlamaGen c2i checkpoint: it has no {key!r}")
    grid = int(match.group(2)) // 16
    return gpt_config(
        f"GPT-{match.group(1)}",
        vocab_size=state["tok_embeddings.weight"].shape[0],
        num_classes=state["cls_embedding.embedding_table.weight"].shape[0] - 1,
        block_size=grid * grid,
    )


class LlamaGenC2IFamily(LlamaGenOutputs):
    """LlamaGen class-conditional models (Sun et al. 2024, "Autoregressive Model Beats Diffusion"): a GPT
    over VQ-16 codes conditioned on a class embedding, an optional draft GPT, and the VQ decoder."""

    name = "llamagen"
    conditioning = "class"
    always_guided = False
    expected_files = f"gpt.safetensors + vq.safetensors (+ draft.safetensors), or c2i_<size>_<res>.pt + {_OFFICIAL_VQ}"

    def __init__(
        self, model: LlamaGenModel, vq: VQModel, draft: LlamaGenModel | None = None, cache_dir: Path | None = None
    ):
        if model.config.model_type != "c2i":
            raise ValueError(
                f"the llamagen family takes class-conditional (c2i) GPTs; this one is {model.config.model_type!r} "
                "(use family 'llamagen-t2i')"
            )
        if vq.codebook().shape[0] != model.vocab_size:
            raise ValueError(
                f"the VQ codebook has {vq.codebook().shape[0]} codes but the GPT's vocabulary is {model.vocab_size}"
            )
        self.model, self.vq, self.draft = model, vq.eval(), draft
        self.layout = TokenLayout(model.grid_size, model.grid_size)
        self.cache_dir = cache_dir

    @staticmethod
    def _files(folder: Path) -> tuple[Path | None, Path | None, Path | None]:
        """(gpt, vq, draft) checkpoint paths in ``folder``; None where absent."""
        gpt = folder / "gpt.safetensors"
        if not gpt.is_file():
            gpt = next((p for p in sorted(folder.glob("c2i_*.pt")) if _OFFICIAL_GPT.search(p.name)), None)
        vq = folder / "vq.safetensors"
        if not vq.is_file():
            vq = folder / _OFFICIAL_VQ if (folder / _OFFICIAL_VQ).is_file() else None
        draft = folder / "draft.safetensors"
        return gpt, vq, draft if draft.is_file() else None

    @classmethod
    def matches(cls, path: Path) -> bool:
        # A t2i GPT's folder holds the same file names (gpt.safetensors, vq.safetensors): leave it to that family.
        claimed = LlamaGenT2IFamily.matches(path)
        return path.is_dir() and not claimed and any(p is not None for p in cls._files(path)[:2])

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> LlamaGenC2IFamily:
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        gpt_path, vq_path, draft_path = cls._files(folder)
        for label, found, wanted in (
            ("GPT", gpt_path, "gpt.safetensors or c2i_*.pt"),
            ("VQ", vq_path, "vq.safetensors or " + _OFFICIAL_VQ),
        ):
            if found is None:
                raise FileNotFoundError(f"model folder {folder} has no {label} checkpoint ({wanted})")
        config = gpt_path.with_name(f"{gpt_path.stem}_config.json")
        gpt = load_llamagen(gpt_path, config if config.is_file() else infer_c2i_config(gpt_path))
        vq = VQModel.from_pretrained(vq_path, None if vq_path.suffix == ".safetensors" else "VQ-16")
        draft = LlamaGenModel(load_llamagen(draft_path)) if draft_path is not None else None
        return cls(LlamaGenModel(gpt), vq, draft, cache_dir=folder).to(device)

    def to(self, device: str | torch.device) -> LlamaGenC2IFamily:
        self.model.gpt.to(device)
        self.vq.to(device)
        if self.draft is not None:
            self.draft.gpt.to(device)
        return self

    @property
    def num_classes(self) -> int:
        return self.model.config.num_classes

    def prompt(self, class_labels: list[int] | None = None, prompts: list[str] | None = None):
        if prompts is not None:
            raise ValueError("this is a class-conditional model: pass class_labels, not a text prompt")
        if class_labels is None:
            raise ValueError("class_labels are required for a class-conditional model")
        return self.model.class_prompt(class_labels)


__all__ = ["GPT_CONFIGS", "LlamaGenC2IFamily", "infer_c2i_config"]
