"""The image modality's feature space for ``mmaccel eval fid --features domain``: the held-out shape classifier."""

from __future__ import annotations

from mmaccel.eval.fid import FeatureExtractor
from mmaccel.eval.generative import ImageFeatures

from .classifier import DEFAULT_WEIGHTS, ShapeClassifier


def domain_features(weights: str | None = None) -> ImageFeatures:
    """The classifier's penultimate features (the bench's domain FID) and its logits (an IS over its classes);
    ``weights`` is a ``classifier.safetensors`` file or its folder (default: the shipped one)."""
    classifier = ShapeClassifier.from_pretrained(DEFAULT_WEIGHTS if weights is None else weights)
    extractor = FeatureExtractor(classifier, classifier.config.feature_dim)
    return ImageFeatures("domain", extractor, classifier.head)
