"""The image modality's :class:`mmaccel.sample.Sampler`: a batch of the pipeline, saved one PNG per sample."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .pipeline import ImageARPipeline


class ImageSampler:
    """Generates batches of :class:`ImageARPipeline` with one method and fixed sampling settings.

    Conditions are class indices (class-conditional models) or prompts (text-to-image models); sample ``i`` of
    a batch uses ``seeds[i]``, which the driver makes consecutive (``seed + index``), as the pipeline's own seeding.
    """

    suffix = ".png"

    def __init__(self, pipe: ImageARPipeline, method: str, params: dict[str, Any], **sampling: Any):
        from mmaccel.sampling import SamplingConfig

        self.pipe = pipe
        self.method = method
        self.params = params
        self.sampling = sampling
        # Built once and dropped: a value only the decoder checks (a window of 0, a negative temperature) is
        # refused before the sample folder is touched.
        config = SamplingConfig(sampling["temperature"], sampling.get("top_k"), sampling.get("top_p"))
        pipe.build_decoder(method, config, sampling.get("guidance_scale"), **params)

    def generate(self, conditions: Sequence[Any], seeds: Sequence[int]) -> list[tuple[Image.Image, dict[str, Any]]]:
        if list(seeds) != list(range(seeds[0], seeds[0] + len(seeds))):
            raise ValueError(f"ImageSampler takes consecutive seeds, got {list(seeds)}")
        text = isinstance(conditions[0], str)
        result = self.pipe(
            class_labels=None if text else list(conditions),
            prompt=list(conditions) if text else None,
            method=self.method,
            seed=seeds[0],
            progress=False,
            **self.sampling,
            **self.params,
        )
        return [
            (
                image,
                {
                    "forwards": s["steps"],
                    "accepted_length": s["tokens"] / s["steps"],
                    "tokens": s["tokens"],
                    "ar_forwards": s["ar_steps"],
                    "batch_nfe": s["batch_nfe"],
                    "batch_draft_nfe": s["batch_draft_nfe"],
                },
            )
            for image, s in zip(result.images, result.stats)
        ]

    def save(self, media: Image.Image, path: Path) -> None:
        media.save(path, format="PNG")
