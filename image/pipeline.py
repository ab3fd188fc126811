"""Class-conditional image generation with any acceleration method, in diffusers' pipeline conventions."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils import BaseOutput
from PIL import Image

from mmaccel.acceptance import RULES
from mmaccel.drafting import DraftModelDrafter, JacobiDrafter
from mmaccel.engine import SpeculativeDecoder
from mmaccel.models import CFGModel
from mmaccel.sampling import SamplingConfig

from .acceptance_map import acceptance_map
from .llamagen import LlamaGenModel
from .spatial import HorizontalRepeat, HorizontalSample, RandomInit, VerticalRepeat
from .vq import VQModel

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"

#: method -> (drafter, rule). Jacobi drafts for the training-free methods, the draft model for the others.
METHODS: dict[str, tuple[str | None, str]] = {
    "ar": (None, "exact"),
    "sjd": ("jacobi", "sjd"),
    "gsd": ("jacobi", "gsd"),
    "lantern": ("jacobi", "lantern"),
    "typical": ("jacobi", "typical"),
    "lantern-draft": ("draft", "lantern"),
    "lantern++": ("draft", "lantern++"),
    "draft": ("draft", "exact"),
}
INITS = {"random": RandomInit, "horizontal": HorizontalRepeat, "horizontal-sample": HorizontalSample}
DRAFTER_PARAMS = {"jacobi": {"window", "init"}, "draft": {"window"}}
DEFAULT_WINDOW = {"jacobi": 16, "draft": 4}


def method_parameters(method: str) -> set[str]:
    """The parameters a method accepts: its drafter's and its rule's."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    drafter, rule = METHODS[method]
    rule_cls = RULES["lantern" if rule == "lantern++" else rule]
    rule_params = set(inspect.signature(rule_cls.__init__).parameters) - {"self", "embeddings", "neighbours"}
    return DRAFTER_PARAMS.get(drafter, set()) | rule_params


@dataclass
class ImagePipelineOutput(BaseOutput):
    """Generated images, their acceptance maps, the raw tokens and per-image statistics."""

    images: list[Image.Image]
    acceptance_maps: list[Image.Image]
    tokens: torch.Tensor
    stats: list[dict[str, Any]] = field(default_factory=list)


class ImageARPipeline:
    """A LlamaGen-style class-conditional AR image model (GPT + VQ tokenizer, optional draft model) that
    generates with plain AR sampling or any speculative method in :data:`METHODS`.

    >>> pipe = ImageARPipeline.from_pretrained()          # the shipped default model
    >>> out = pipe(class_labels=[3], method="gsd", seed=0)
    >>> out.images[0].save("out.png")
    """

    def __init__(self, model: LlamaGenModel, vq: VQModel, draft: LlamaGenModel | None = None):
        if vq.codebook().shape[0] != model.vocab_size:
            raise ValueError(
                f"the VQ codebook has {vq.codebook().shape[0]} codes but the GPT's vocabulary is {model.vocab_size}"
            )
        self.model, self.vq, self.draft = model, vq.eval(), draft
        self._neighbours: dict[int, torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        """Load ``gpt``, ``vq`` and (if present) ``draft`` safetensors + json configs from a folder
        (default: the model shipped with mmaccel)."""
        folder = Path(path) if path is not None else DEFAULT_WEIGHTS
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        for name in ("gpt.safetensors", "vq.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"model folder {folder} has no {name}")
        vq = VQModel.from_pretrained(folder / "vq.safetensors")
        model = LlamaGenModel.from_pretrained(folder / "gpt.safetensors", folder / "gpt_config.json")
        draft = None
        if (folder / "draft.safetensors").is_file():
            draft = LlamaGenModel.from_pretrained(folder / "draft.safetensors", folder / "draft_config.json")
        return cls(model, vq, draft).to(device)

    def to(self, device: str | torch.device) -> ImageARPipeline:
        self.model.gpt.to(device)
        self.vq.to(device)
        if self.draft is not None:
            self.draft.gpt.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_classes(self) -> int:
        return self.model.config.num_classes

    @property
    def grid(self) -> tuple[int, int]:
        g = self.model.grid_size
        return g, g

    def _lantern_neighbours(self, k: int) -> torch.Tensor:
        """Nearest codebook entries, computed once per pipeline (LANTERN's precomputed table)."""
        from mmaccel.acceptance import nearest_neighbours

        have = max(self._neighbours, default=0)
        if have < k:
            self._neighbours = {k: nearest_neighbours(self.vq.codebook().detach(), k)}
            have = k
        return self._neighbours[have][:, :k]

    def build_decoder(
        self, method: str, sampling: SamplingConfig, guidance_scale: float = 1.0, **params: Any
    ) -> SpeculativeDecoder:
        """The decoder for ``method`` with ``params`` (drafter and rule parameters); unknown ones raise."""
        allowed = method_parameters(method)
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)} for method {method!r}; it takes {sorted(allowed)}"
            )
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        drafter_name, rule = METHODS[method]
        guided = (lambda m: CFGModel(m, guidance_scale)) if guidance_scale != 1.0 else (lambda m: m)
        window = params.pop("window", DEFAULT_WINDOW.get(drafter_name))
        drafter = None
        if drafter_name == "jacobi":
            init_name = params.pop("init", "random")
            if init_name not in INITS and init_name != "vertical":
                raise ValueError(f"unknown init {init_name!r}; choose one of {[*INITS, 'vertical']}")
            width = self.model.grid_size
            vocab = self.model.vocab_size
            init = VerticalRepeat(vocab, width) if init_name == "vertical" else INITS[init_name](vocab, width)
            drafter = JacobiDrafter(window, init)
        elif drafter_name == "draft":
            if self.draft is None:
                raise ValueError(f"method {method!r} needs a draft model; this pipeline has none")
            drafter = DraftModelDrafter(guided(self.draft), window)
        embeddings = None
        if rule.startswith("lantern"):
            embeddings = self.vq.codebook().detach()
            # LANTERN's k = 1000 is ~6% of a 16384-entry codebook; keep that share for other codebook sizes.
            k = params.setdefault("k", max(1, min(1000, round(1000 * self.model.vocab_size / 16384))))
            params["neighbours"] = self._lantern_neighbours(k)
        elif rule == "gsd":
            # GSD clusters on the model's own embedding of image tokens.
            embeddings = self.model.gpt.tok_embeddings.weight.detach()
        return SpeculativeDecoder(guided(self.model), drafter, rule, sampling, embeddings=embeddings, **params)

    def decode(self, tokens: torch.Tensor) -> list[Image.Image]:
        h, w = self.grid
        with torch.no_grad():
            pixels = self.vq.decode_code(tokens.view(-1, h, w).to(self.device))
        array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in array]

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int],
        method: str = "ar",
        num_images: int | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        progress: bool = True,
        **method_params: Any,
    ) -> ImagePipelineOutput:
        """Generate ``num_images`` images (default: one per label; a single label is repeated).

        Image ``i`` uses seed ``seed + i``, so an image is the same whatever batch it is generated in.
        """
        labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        if num_images is not None:
            if num_images < 1:
                raise ValueError(f"num_images must be >= 1, got {num_images}")
            if len(labels) == 1:
                labels = labels * num_images
            elif len(labels) != num_images:
                raise ValueError(f"num_images ({num_images}) differs from the number of class_labels ({len(labels)})")
        prompt = self.model.class_prompt(labels)
        sampling = SamplingConfig(temperature, top_k, top_p)
        decoder = self.build_decoder(method, sampling, guidance_scale, **method_params)
        seeds = [seed + i for i in range(len(labels))]
        out = decoder.generate(prompt, self.model.num_tokens, seeds=seeds, progress=progress)
        n = self.model.num_tokens
        stats = []
        for i, steps in enumerate(out.stats.steps_per_sample.tolist()):
            stats.append(
                {
                    "class": labels[i],
                    "seed": seeds[i],
                    "method": method,
                    "tokens": n,
                    "steps": steps,
                    "ar_steps": n,
                    "step_compression": n / steps,
                    "batch_nfe": out.stats.nfe,
                    "batch_draft_nfe": out.stats.draft_nfe,
                    "batch_wall_s": out.stats.wall_s,
                }
            )
        maps = [acceptance_map(a, self.grid, max_step=n) for a in out.stats.accept_step]
        return ImagePipelineOutput(self.decode(out.tokens), maps, out.tokens.cpu(), stats)
