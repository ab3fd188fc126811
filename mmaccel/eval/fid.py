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


def frechet_distance(extractor: FeatureExtractor, real: torch.Tensor, fake: torch.Tensor, batch: int = 256) -> float:
    """FID between uint8 image batches ``[N, 3, H, W]`` in the extractor's feature space."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=extractor)
    for images, is_real in ((real, True), (fake, False)):
        for start in range(0, len(images), batch):
            metric.update(images[start : start + batch], real=is_real)
    return float(metric.compute())
