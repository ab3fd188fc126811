"""Fréchet distance in a domain feature space, through torchmetrics' FID with a custom feature extractor."""

from __future__ import annotations

import torch
from torch import nn


class FeatureExtractor(nn.Module):
    """Adapts a model's ``features(images)`` to torchmetrics: uint8 ``[B, 3, H, W]`` in, ``[B, D]`` float out."""

    def __init__(self, model: nn.Module, num_features: int):
        super().__init__()
        self.model = model.eval()
        self.num_features = num_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images
        return self.model.features(x).float()


class DomainFID:
    """FID against a fixed set of real images whose statistics are computed once and reused for every
    :meth:`score` (e.g. one per method in a bench)."""

    def __init__(self, extractor: FeatureExtractor, real: torch.Tensor, batch: int = 256):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.batch = batch
        self.metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
        self._update(real, real=True)

    def _update(self, images: torch.Tensor, real: bool) -> None:
        for start in range(0, len(images), self.batch):
            self.metric.update(images[start : start + self.batch], real=real)

    def score(self, fake: torch.Tensor) -> float:
        """FID of uint8 images ``[N, 3, H, W]`` against the real set."""
        self.metric.reset()
        self._update(fake, real=False)
        return float(self.metric.compute())


def frechet_distance(extractor: FeatureExtractor, real: torch.Tensor, fake: torch.Tensor, batch: int = 256) -> float:
    """FID between uint8 image batches ``[N, 3, H, W]`` in the extractor's feature space."""
    return DomainFID(extractor, real, batch).score(fake)
