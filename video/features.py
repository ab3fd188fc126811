"""The video modality's feature space for ``mmaccel eval fvd --features domain``: the held-out clip classifier."""

from __future__ import annotations

from pathlib import Path

from mmaccel.eval.fvd import VideoFeatures

from .classifier import VideoClassifier
from .model import WEIGHTS_DIR


def domain_features(weights: str | None = None) -> VideoFeatures:
    """The classifier's pooled clip features (the bench's ``fvd_domain``); ``weights`` is a
    ``classifier.safetensors`` file or its folder (default: the shipped one)."""
    path = Path(weights) if weights is not None else WEIGHTS_DIR
    classifier = VideoClassifier.from_pretrained(path / "classifier.safetensors" if path.is_dir() else path)
    return VideoFeatures("domain", lambda clips: classifier.embed(clips)[0])
