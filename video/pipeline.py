"""AR video generation with any acceleration method of the core, in diffusers' pipeline conventions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils import BaseOutput

from mmaccel.checkpoint import CheckpointError
from mmaccel.methods import TokenTables, build_decoder, parse_method
from mmaccel.models.vq import VQModel
from mmaccel.sampling import SamplingConfig

from .data import CLASS_NAMES
from .layout import VideoLayout
from .model import WEIGHTS_DIR, VideoGPT, load_video_gpt
from .schedule import SCHEDULES, schedule_decoder, split_schedule
from .temporal import video_inits

#: Sampling settings of the default model (CLI, bench and model card use them).
DEFAULTS = {"guidance_scale": 2.0, "temperature": 1.0, "top_k": None, "top_p": None}
DEFAULT_METHOD = "mc-sjd"


@dataclass
class VideoPipelineOutput(BaseOutput):
    """Generated clips (uint8 ``[T, H, W, 3]`` each), raw tokens ``[B, N]``, acceptance maps ``[B, T, h, w]``
    (the forward that accepted each token; 0 is the prompt's) and per-clip statistics."""

    frames: list[np.ndarray]
    tokens: torch.Tensor
    acceptance_maps: torch.Tensor
    stats: list[dict[str, Any]] = field(default_factory=list)


class VideoARPipeline:
    """The video GPT (:mod:`mmaccel.video.model`) and its VQ tokenizer, generating class-conditional clips with
    plain AR sampling or any method of the core's table; Jacobi methods take ``init=temporal-repeat`` or
    ``init=temporal-sample`` (:mod:`mmaccel.video.temporal`).

    >>> pipe = VideoARPipeline.from_pretrained()           # the shipped default model
    >>> out = pipe(class_labels=3, method="mc-sjd", init="temporal-repeat", seed=0)
    >>> out.frames[0].shape                                # (8, 32, 32, 3)
    """

    def __init__(self, model: VideoGPT, vq: VQModel, cache_dir: str | os.PathLike | None = None):
        if vq.config.codebook_size != model.codebook_size:
            raise ValueError(f"VQ codebook {vq.config.codebook_size} != GPT codebook {model.codebook_size}")
        self.model = model
        self.vq = vq
        self.cache_dir = cache_dir
        self.layout = VideoLayout(model.frames, model.grid, model.grid)
        self.class_names = CLASS_NAMES if model.num_classes == len(CLASS_NAMES) else ()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> VideoARPipeline:
        """Load ``gpt.safetensors`` and ``vq.safetensors`` (with their configs) from a folder (default: shipped)."""
        folder = Path(path) if path is not None else WEIGHTS_DIR
        if not folder.is_dir():
            raise CheckpointError(f"video model folder not found: {str(folder)!r}")
        vq_path = folder / "vq.safetensors"
        if not vq_path.is_file():
            raise CheckpointError(f"video VQ weights not found: {str(vq_path)!r}")
        model = load_video_gpt(folder / "gpt.safetensors", device)
        vq = VQModel.from_pretrained(vq_path).to(device)
        return cls(model, vq, folder)

    def to(self, device: str | torch.device) -> VideoARPipeline:
        self.model.to(device)
        self.vq.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    def class_label(self, value: int | str) -> int:
        """A class index, or a class name of the default model; refusals name the classes."""
        n = self.model.num_classes
        if isinstance(value, str):
            if value not in self.class_names:
                known = f"one of {', '.join(self.class_names)} or " if self.class_names else ""
                raise ValueError(f"unknown class {value!r}; give {known}an index in [0, {n})")
            return self.class_names.index(value)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < n:
            raise ValueError(f"class must be an integer in [0, {n}), got {value!r}")
        return int(value)

    def build_decoder(
        self, method: str, sampling: SamplingConfig, guidance_scale: float, schedule: str | None = None, **params: Any
    ):
        """The core decoder of ``method``; ``schedule`` (``frame``, ``row``, ``diagonal``: :mod:`.schedule`)
        sets each step's window from where the prefix stands in the clip."""
        if schedule is not None and schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        k = self.model.codebook_size
        providers = {"codebook": self.vq.codebook, "embeddings": lambda: self.model.embedding_table()[:k]}
        tables = TokenTables(providers, self.cache_dir)
        decoder = build_decoder(
            self.model,
            method,
            params,
            sampling=sampling,
            guidance_scale=guidance_scale,
            tables=tables,
            inits=video_inits(self.layout, self.model.codebook_size),
        )
        return decoder if schedule is None else schedule_decoder(decoder, schedule, self.layout)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> list[np.ndarray]:
        """Tokens ``[B, N]`` -> uint8 clips ``[T, H, W, 3]``."""
        grids = self.layout.grids(tokens.to(next(self.vq.parameters()).device))
        b, t = grids.shape[:2]
        images = self.vq.decode_code(grids.flatten(0, 1))
        u8 = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return list(u8.reshape(b, t, *u8.shape[1:]))

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str],
        method: str | None = None,
        num_videos: int | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        progress: bool = True,
        schedule: str | None = None,
        **method_params: Any,
    ) -> VideoPipelineOutput:
        """Generate ``num_videos`` clips (default: one per class label; a single label is repeated).

        Clip ``i`` uses seed ``seed + i``, so a clip is the same alone or in a batch. ``method`` is a name of
        the core's table or a spec such as ``"sjd:init=temporal-repeat"``; ``method_params`` add parameters.
        ``schedule`` (``frame``, ``row``, ``diagonal``; or ``:schedule=frame`` in the spec) aligns each step's
        window (:mod:`mmaccel.video.schedule`).
        """
        spec = DEFAULT_METHOD if method is None else method
        core_spec, spec_schedule = split_schedule(spec)
        if spec_schedule is not None:
            if schedule is not None and schedule != spec_schedule:
                raise ValueError(f"schedule {schedule!r} differs from the method's schedule {spec_schedule!r}")
            schedule = spec_schedule
        name, params = parse_method(core_spec)
        params = {**params, **method_params}
        labels = [class_labels] if isinstance(class_labels, (int, str, np.integer)) else list(class_labels)
        if not labels:
            raise ValueError("class_labels must not be empty")
        if num_videos is not None:
            if isinstance(num_videos, bool) or not isinstance(num_videos, int) or num_videos < 1:
                raise ValueError(f"num_videos must be an integer >= 1, got {num_videos!r}")
            if len(labels) == 1:
                labels = labels * num_videos
            elif len(labels) != num_videos:
                raise ValueError(f"num_videos ({num_videos}) differs from the number of class labels ({len(labels)})")
        labels = [self.class_label(c) for c in labels]
        guidance_scale = DEFAULTS["guidance_scale"] if guidance_scale is None else guidance_scale
        temperature = DEFAULTS["temperature"] if temperature is None else temperature
        sampling = SamplingConfig(temperature, top_k, top_p)
        decoder = self.build_decoder(name, sampling, guidance_scale, schedule, **params)
        prompt = self.model.class_prompt(torch.tensor(labels))
        n = self.layout.num_tokens
        seeds = [seed + i for i in range(len(labels))]
        out = decoder.generate(prompt, n, seeds=seeds, progress=progress)
        tokens, accept = out.tokens.cpu(), out.stats.accept_step.cpu()
        maps = self.layout.acceptance_maps(accept)
        per_frame = self.layout.frame_steps(accept)
        stats = []
        for i, steps in enumerate(out.stats.steps_per_sample.tolist()):
            stats.append(
                {
                    "class": self.class_names[labels[i]] if self.class_names else labels[i],
                    "label": labels[i],
                    "seed": seeds[i],
                    "method": spec,
                    "schedule": schedule,
                    "tokens": n,
                    "steps": steps,
                    "ar_steps": n,
                    "step_compression": n / steps,
                    "frame_steps": per_frame[i].tolist(),
                    "batch_nfe": out.stats.nfe,
                    "batch_wall_s": out.stats.wall_s,
                }
            )
        return VideoPipelineOutput(self.decode(tokens), tokens, maps, stats)
