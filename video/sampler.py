"""The video modality's :class:`mmaccel.sample.Sampler`: a batch of :class:`VideoARPipeline`, one clip file each.

Clips are written at the model's own resolution (no upscaling), so a folder holds the pixels FVD scripts compare:
an animated PNG (``png``, lossless: the default, and what ``--npz`` reads back), a GIF (``gif``, 256 colours a
frame) or an MP4 (``mp4``, H.264, needs PyAV). Every frame lasts :data:`mmaccel.eval.video_sets.FRAME_MS`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmaccel.eval.video_sets import FRAME_MS

from .pipeline import VideoARPipeline

#: --format -> file suffix.
CLIP_FORMATS = {"png": ".png", "gif": ".gif", "mp4": ".mp4"}


def check_format(fmt: str) -> str:
    """The suffix of clip format ``fmt``; an unknown format, or MP4 without PyAV, is refused naming --format."""
    if fmt not in CLIP_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(CLIP_FORMATS)}, got {fmt!r}")
    if fmt == "mp4" and importlib.util.find_spec("av") is None:
        raise ValueError("--format mp4 needs PyAV (pip install av); use png (lossless) or gif")
    return CLIP_FORMATS[fmt]


def save_clip(frames: np.ndarray, path: Path) -> None:
    """uint8 ``[T, H, W, 3]`` as an animated PNG or GIF (PIL) or an MP4 (PyAV), by ``path``'s suffix."""
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        from .cli import write_clip  # PyAV's H.264 encoder, as ``mmaccel generate video`` writes it

        write_clip(frames, path, fps=1000 // FRAME_MS, scale=1)
        return
    images = [Image.fromarray(f) for f in frames]
    fmt = "PNG" if suffix == ".png" else "GIF"
    images[0].save(path, format=fmt, save_all=True, append_images=images[1:], duration=FRAME_MS, loop=0)


class VideoSampler:
    """Generates batches of :class:`VideoARPipeline` with one method and fixed sampling settings; conditions are
    class indices, and sample ``i`` of a batch uses ``seeds[i]`` (consecutive, as the pipeline seeds clips)."""

    def __init__(self, pipe: VideoARPipeline, method: str, params: dict[str, Any], suffix: str, **sampling: Any):
        from mmaccel.sampling import SamplingConfig

        self.pipe, self.method, self.params, self.sampling, self.suffix = pipe, method, params, sampling, suffix
        # Built once and dropped: a value only the decoder checks is refused before the folder is touched.
        config = SamplingConfig(sampling["temperature"], sampling.get("top_k"), sampling.get("top_p"))
        pipe.build_decoder(method, config, sampling["guidance_scale"], **params)

    def generate(self, conditions: Sequence[Any], seeds: Sequence[int]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        if list(seeds) != list(range(seeds[0], seeds[0] + len(seeds))):
            raise ValueError(f"VideoSampler takes consecutive seeds, got {list(seeds)}")
        result = self.pipe(
            list(conditions), method=self.method, seed=seeds[0], progress=False, **self.sampling, **self.params
        )
        return [
            (
                clip,
                {
                    "forwards": s["steps"],
                    "accepted_length": s["tokens"] / s["steps"],
                    "tokens": s["tokens"],
                    "ar_forwards": s["ar_steps"],
                    "frame_forwards": s["frame_steps"],
                    "batch_nfe": s["batch_nfe"],
                },
            )
            for clip, s in zip(result.frames, result.stats)
        ]

    def save(self, media: np.ndarray, path: Path) -> None:
        save_clip(media, path)
