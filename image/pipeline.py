"""AR image generation with any acceleration method, for any image family, in diffusers' pipeline conventions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils import BaseOutput
from PIL import Image

from mmaccel.drafting.eagle import EagleHead, load_eagle
from mmaccel.engine import SpeculativeDecoder
from mmaccel.methods import TokenTables, build_decoder, check_params
from mmaccel.methods import method as find_method
from mmaccel.sampling import SamplingConfig

from .acceptance_map import acceptance_map
from .defaults import DEFAULT_METHOD, DEFAULTS
from .family import ImageFamily, load_family
from .spatial import HorizontalRepeat, HorizontalSample, RandomInit, VerticalRepeat

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
#: The spatial Jacobi initialisations, by the name a method's ``init`` parameter takes.
INITS = {
    "random": RandomInit,
    "horizontal": HorizontalRepeat,
    "horizontal-sample": HorizontalSample,
    "vertical": VerticalRepeat,
}


@dataclass
class ImagePipelineOutput(BaseOutput):
    """Generated images, their acceptance maps, the raw tokens and per-image statistics."""

    images: list[Image.Image]
    acceptance_maps: list[Image.Image]
    tokens: torch.Tensor
    stats: list[dict[str, Any]] = field(default_factory=list)


def load_draft(target: ImageFamily, path: str | os.PathLike, device: str | torch.device = "cpu") -> ImageFamily:
    """The draft checkpoint ``path``, loaded as ``target``'s family and checked against it.

    A draft must score the same image tokens in the same layout, and read the target's prompts (it is fed
    the prompt the target family builds, so it must share the tokenizer or the class table).
    """
    draft = load_family(path, device, target.name)
    if draft.layout != target.layout:
        raise ValueError(f"draft {path} generates {draft.layout}, but the target generates {target.layout}")
    if draft.model.vocab_size != target.model.vocab_size:
        raise ValueError(
            f"draft {path} scores {draft.model.vocab_size} image tokens, the target {target.model.vocab_size}"
        )
    if draft.conditioning != target.conditioning or draft.num_classes != target.num_classes:
        raise ValueError(f"draft {path} is conditioned differently from the target ({draft.conditioning})")
    return draft


class ImageARPipeline:
    """An AR image model family (see :mod:`mmaccel.image.family`) that generates with plain AR sampling or
    any speculative method of the core's table (:data:`mmaccel.methods.METHODS`).

    >>> pipe = ImageARPipeline.from_pretrained()          # the shipped default model
    >>> out = pipe(class_labels=[3], method="gsd", seed=0)
    >>> out.images[0].save("out.png")
    """

    def __init__(self, family: ImageFamily):
        self.family = family
        self.draft_family: ImageFamily | None = None  # a separately loaded draft checkpoint, moved by .to()
        self._eagle: EagleHead | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        family: str | None = None,
        draft: str | os.PathLike | None = None,
    ) -> ImageARPipeline:
        """Load a checkpoint folder of any supported family (default: the model shipped with mmaccel).

        ``family`` names the family instead of recognising it from the folder's files. ``draft`` is a smaller
        checkpoint of the same family with the same image vocabulary and layout (e.g. Janus-Pro-1B for
        Janus-Pro-7B); the draft methods (``draft``, ``lantern-draft``, ``lantern++``) draft with it. It
        replaces any draft the folder ships (the default model ships one).
        """
        pipe = cls(load_family(path if path is not None else DEFAULT_WEIGHTS, device, family))
        if draft is not None:
            pipe.draft_family = load_draft(pipe.family, draft, device)
            pipe.draft = pipe.draft_family.model
        return pipe

    def to(self, device: str | torch.device) -> ImageARPipeline:
        self.family.to(device)
        if self.draft_family is not None:
            self.draft_family.to(device)
        if self._eagle is not None:
            self._eagle.to(device)
        return self

    @property
    def model(self):
        return self.family.model

    @property
    def draft(self):
        return self.family.draft

    @draft.setter
    def draft(self, value) -> None:
        self.family.draft = value

    @property
    def eagle(self) -> EagleHead | None:
        """The EAGLE draft head shipped beside a LlamaGen GPT (``eagle.safetensors`` in its folder), bound to the
        GPT's token embedding and output layer; None for a folder or family without one."""
        gpt = getattr(self.model, "gpt", None)
        folder = self.family.cache_dir
        path = None if folder is None else Path(folder) / "eagle.safetensors"
        if self._eagle is None and gpt is not None and path is not None and path.is_file():
            head = load_eagle(path).to(self.device)
            self._eagle = head.bind(gpt.tok_embeddings, gpt.output)
        return self._eagle

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_classes(self) -> int | None:
        return self.family.num_classes

    @property
    def num_tokens(self) -> int:
        return self.family.layout.num_tokens

    @property
    def grid(self) -> tuple[int, int]:
        return self.family.layout.grid

    def build_decoder(
        self,
        method: str,
        sampling: SamplingConfig | None = None,
        guidance_scale: float | None = None,
        compile: bool = False,
        **params: Any,
    ) -> SpeculativeDecoder:
        """The decoder for ``method`` with ``params`` (drafter and rule parameters); unknown ones raise.
        ``compile`` runs the step forward under ``torch.compile``."""
        layout = self.family.layout
        codes = self.model.vocab_size - (layout.row_end is not None)
        inits = {name: (lambda cls=cls: cls(codes, layout.width, layout.row_end)) for name, cls in INITS.items()}
        tables = TokenTables(
            {"codebook": self.family.codebook, "embeddings": self.family.token_embeddings}, self.family.cache_dir
        )
        return build_decoder(
            self.model,
            method,
            params,
            sampling=sampling,
            guidance_scale=DEFAULTS["guidance_scale"] if guidance_scale is None else guidance_scale,
            always_guided=self.family.always_guided,
            draft=self.draft,
            eagle=self.eagle if find_method(method).drafter == "eagle" else None,  # loaded only when used
            tables=tables,
            inits=inits,
            compile=compile,
        )

    def decode(self, tokens: torch.Tensor) -> list[Image.Image]:
        array = self.family.decode(tokens).numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in array]

    def _conditions(
        self, class_labels: int | list[int] | None, prompt: str | list[str] | None, num_images: int | None
    ) -> tuple[list[int] | None, list[str] | None, int]:
        if class_labels is not None and prompt is not None:
            raise ValueError("give class_labels or prompt, not both")
        if class_labels is None and prompt is None:
            raise ValueError("give class_labels (class-conditional models) or prompt (text-to-image models)")
        conditions: list = [class_labels] if isinstance(class_labels, int) else list(class_labels or [])
        if prompt is not None:
            conditions = [prompt] if isinstance(prompt, str) else list(prompt)
        if not conditions:
            raise ValueError("class_labels / prompt must not be empty")
        if num_images is not None:
            if num_images < 1:
                raise ValueError(f"num_images must be >= 1, got {num_images}")
            if len(conditions) == 1:
                conditions = conditions * num_images
            elif len(conditions) != num_images:
                raise ValueError(f"num_images ({num_images}) differs from the number of conditions ({len(conditions)})")
        if prompt is not None:
            return None, conditions, len(conditions)
        return conditions, None, len(conditions)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | None = None,
        method: str | None = None,
        num_images: int | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        progress: bool = True,
        prompt: str | list[str] | None = None,
        compile: bool = False,
        **method_params: Any,
    ) -> ImagePipelineOutput:
        """Generate ``num_images`` images (default: one per class label or prompt; a single one is repeated).

        Class-conditional families take ``class_labels``, text-to-image families ``prompt``. Image ``i`` uses
        seed ``seed + i``, so an image is the same whatever batch it is generated in. ``method``,
        ``guidance_scale`` and ``temperature`` default to :data:`mmaccel.image.defaults.DEFAULTS`. ``compile=True``
        runs the step forward under ``torch.compile`` (static shapes; CUDA graphs on a GPU), with the same tokens.
        """
        method = DEFAULT_METHOD if method is None else method
        check_params(method, method_params)  # a bad method or parameter fails before the prompt is built
        labels, prompts, count = self._conditions(class_labels, prompt, num_images)
        conditioned = self.family.prompt(class_labels=labels, prompts=prompts)
        temperature = DEFAULTS["temperature"] if temperature is None else temperature
        sampling = SamplingConfig(temperature, top_k, top_p)
        decoder = self.build_decoder(method, sampling, guidance_scale, compile=compile, **method_params)
        seeds = [seed + i for i in range(count)]
        n = self.num_tokens
        out = decoder.generate(conditioned, n, seeds=seeds, progress=progress)
        stats = []
        for i, steps in enumerate(out.stats.steps_per_sample.tolist()):
            condition = {"class": labels[i]} if labels is not None else {"prompt": prompts[i]}
            stats.append(
                {
                    **condition,
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
        steps_grid = self.family.layout.to_grid(out.stats.accept_step)
        maps = [acceptance_map(a.flatten(), self.grid, max_step=n) for a in steps_grid]
        return ImagePipelineOutput(self.decode(out.tokens), maps, out.tokens.cpu(), stats)
