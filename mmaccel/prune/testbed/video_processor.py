"""LLaVA-OneVision video preprocessing that needs no torchvision, for the video testbed.

``transformers``' own ``LlavaOnevisionVideoProcessor`` runs on torchvision, which this project does not
install, and without torchvision ``LlavaOnevisionProcessor`` refuses any video processor (its type check
goes through torchvision-only placeholders). Two small classes stand in:

* :class:`ArrayVideoProcessor` does OneVision's video preprocessing (resize to ``size``, rescale to [0, 1],
  normalise with the CLIP mean and std) on numpy frames with PIL and returns the same ``pixel_values_videos``
  ``[videos, frames, 3, H, W]``;
* :class:`ArrayOnevisionProcessor` is ``LlavaOnevisionProcessor`` (same prompts, same video token count:
  ``frames * ceil(side / 2)**2 + 1``) that accepts and loads it.

Importing this module registers both with the ``transformers`` auto classes, so
``AutoProcessor.from_pretrained`` loads a folder saved with them (:func:`mmaccel.prune.bench.load_model`
imports it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import AutoImageProcessor, LlavaOnevisionProcessor, PretrainedConfig
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING
from transformers.video_processing_utils import VideoProcessorMixin


class ArrayVideoProcessor(VideoProcessorMixin):
    """OneVision-style video preprocessing on numpy arrays and PIL (no torchvision).

    Takes a video as an array ``[frames, H, W, 3]`` (uint8 RGB) or a list of ``[H, W, 3]`` frames, or a list
    of such videos of equal length; every video becomes ``[frames, 3, height, width]`` floats. Frames are
    taken as given (no decoding or frame sampling).
    """

    model_input_names = ["pixel_values_videos"]
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 384, "width": 384}
    rescale_factor = 1 / 255
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = False

    def preprocess(self, videos: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        # The processor passes every video kwarg it knows of; only `size` means anything here.
        size = kwargs.get("size") or self.size
        out = np.stack([self._video(np.asarray(v), size) for v in _as_video_list(videos)])
        return BatchFeature(data={"pixel_values_videos": torch.from_numpy(out)}, tensor_type=return_tensors)

    def _video(self, frames: np.ndarray, size: dict) -> np.ndarray:
        from PIL import Image

        if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
            raise ValueError(f"videos: each video must be [frames, H, W, 3] RGB, got shape {tuple(frames.shape)}")
        frames = frames[..., :3].astype(np.uint8)
        height, width = int(size["height"]), int(size["width"])
        if self.do_resize and frames.shape[1:3] != (height, width):
            frames = np.stack(
                [np.asarray(Image.fromarray(f).resize((width, height), int(self.resample))) for f in frames]
            )
        x = frames.astype(np.float32)
        if self.do_rescale:
            x = x * np.float32(self.rescale_factor)
        if self.do_normalize:
            x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _as_video_list(videos: Any) -> list:
    if isinstance(videos, np.ndarray | torch.Tensor) and videos.ndim == 4:
        return [videos]
    videos = list(videos)
    if videos and np.asarray(videos[0]).ndim == 3:  # one video given as a list of frames
        return [np.stack([np.asarray(f) for f in videos])]
    return videos


class ArrayOnevisionProcessor(LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` whose video processor is an :class:`ArrayVideoProcessor`."""

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> type:
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(f"video_processor must be a video processor, got {type(argument).__name__}")
            return type(argument)
        return super().check_argument_for_proper_class(argument_name, argument)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # The stock loader goes through AutoVideoProcessor, a torchvision-only placeholder here.
        kwargs.pop("subfolder", None)
        loaders = {
            "image_processor": lambda: AutoImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs),
            "tokenizer": lambda: cls._load_tokenizer_from_pretrained(
                "tokenizer", pretrained_model_name_or_path, **kwargs
            ),
            "video_processor": lambda: ArrayVideoProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs),
        }
        return [loaders[name]() for name in cls.get_attributes()]


class _Registration(PretrainedConfig):
    # The auto classes find registered classes by name through a config class; this one names no model.
    model_type = "mmaccel_array_onevision"


# `AutoVideoProcessor.register` is itself a torchvision-only placeholder here, so the mapping is written directly.
VIDEO_PROCESSOR_MAPPING.register(_Registration, {"torchvision": ArrayVideoProcessor}, exist_ok=True)
PROCESSOR_MAPPING.register(_Registration, ArrayOnevisionProcessor, exist_ok=True)
