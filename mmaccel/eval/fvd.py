"""Fréchet Video Distance (Unterthiner et al. 2018) between two clip sets, in any video feature space.

``i3d`` is the standard FVD: the I3D network of :mod:`mmaccel.eval.i3d`, from a local weights file. Other spaces
come from the modalities through the ``mmaccel.video_features`` entry-point group (value:
``features(weights: str | None) -> VideoFeatures``): the video modality registers ``domain``, its held-out clip
classifier. The distance itself is the core's FID computation (:func:`mmaccel.eval.generative.fid_from_features`,
torchmetrics' Fréchet distance), on clip features instead of image features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .generative import fid_from_features

BUILTIN_VIDEO_FEATURES = ("i3d",)


@dataclass
class VideoFeatures:
    """A feature space for clip sets: ``features`` maps uint8 clips ``[N, T, H, W, 3]`` to float ``[N, D]``."""

    name: str
    features: Callable[[np.ndarray], torch.Tensor]


def video_feature_space(name: str, weights: str | None) -> VideoFeatures:
    """The :class:`VideoFeatures` named ``name`` (``--features``), loaded from ``weights`` where given."""
    from importlib.metadata import entry_points

    if weights is not None and not Path(weights).exists():
        raise FileNotFoundError(f"--weights {weights!r} does not exist")
    if name == "i3d":
        if weights is None:
            raise ValueError(
                "--features i3d needs --weights PATH: a pytorch-i3d InceptionI3d state dict such as rgb_imagenet.pt "
                "or VideoGPT's i3d_pretrained_400.pt (or the same tensors as .safetensors); nothing is downloaded"
            )
        from .i3d import InceptionI3d, i3d_embed

        model = InceptionI3d.from_file(weights)
        return VideoFeatures("i3d", lambda clips: i3d_embed(model, clips))
    registered = {ep.name: ep for ep in entry_points(group="mmaccel.video_features")}
    if name not in registered:
        known = ", ".join([*BUILTIN_VIDEO_FEATURES, *sorted(registered)])
        raise ValueError(f"--features {name!r} is not a video feature space; choose one of {known}")
    return registered[name].load()(weights)


@torch.no_grad()
def frechet_video_distance(space: VideoFeatures, real: np.ndarray, fake: np.ndarray) -> dict[str, float | int | str]:
    """FVD of ``fake`` against ``real`` (uint8 ``[N, T, H, W, 3]`` each) in ``space``."""
    real_f, fake_f = space.features(real).double(), space.features(fake).double()
    fvd = fid_from_features(real_f, fake_f)
    return {"features": space.name, "num_real": len(real), "num_fake": len(fake), "fvd": fvd}


__all__ = ["VideoFeatures", "frechet_video_distance", "video_feature_space"]
