"""FID, Inception Score and precision / recall of two image sets, in any feature space.

Features are computed once per set; torchmetrics then computes FID (Heusel et al. 2017) and IS (Salimans et al.
2016) from them (through an identity feature module, so the figures are torchmetrics' own). torchmetrics has no
precision / recall for generative models, so :func:`precision_recall` implements Kynkäänniemi et al. 2019 (k-NN
manifolds, k = 3) in a few tensor lines.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class ImageFeatures:
    """A feature space for image sets: ``features`` maps uint8 ``[B, 3, H, W]`` to ``[B, D]``; ``logits`` (optional)
    maps those features to class logits, for the Inception Score."""

    name: str
    features: Callable[[torch.Tensor], torch.Tensor]
    logits: Callable[[torch.Tensor], torch.Tensor] | None = None


class _Given(nn.Module):
    """torchmetrics' feature extractor over features already computed: the identity, with their width."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@torch.no_grad()
def extract(space: ImageFeatures, images: np.ndarray, batch: int = 64) -> torch.Tensor:
    """float64 features ``[N, D]`` of uint8 images ``[N, H, W, 3]``, in batches."""
    parts = []
    for start in range(0, len(images), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).permute(0, 3, 1, 2)
        parts.append(space.features(chunk).double().cpu())
    return torch.cat(parts)


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """torchmetrics' FID between two feature sets ``[N, D]``, never below zero."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Given(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    # A squared distance: with fewer samples than dimensions the covariances are singular, and torchmetrics'
    # eigenvalue route then returns a set against itself as about -1e-4 (torchmetrics 1.9), not 0.
    return max(float(metric.compute()), 0.0)


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """torchmetrics' IS (mean, std over ``splits``) from class logits ``[N, C]``; its split shuffle is seeded."""
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():  # its note that it keeps every feature: these are logits already in memory
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=_Given(logits.shape[1]), splits=max(1, min(splits, len(logits))))
    metric.update(logits.double())
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the share of fake samples inside the real
    k-NN manifold, and of real samples inside the fake one. Needs more than ``k`` samples per set."""
    k = min(k, len(real) - 1, len(fake) - 1)

    def radii(x: torch.Tensor) -> torch.Tensor:
        # the k-th neighbour's distance; column 0 of the sorted distances is the sample itself
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values

    def coverage(manifold: torch.Tensor, probes: torch.Tensor) -> float:
        inside = torch.cdist(probes, manifold) <= radii(manifold)[None, :]
        return float(inside.any(dim=1).double().mean())

    return coverage(real, fake), coverage(fake, real)


@torch.no_grad()
def evaluate(space: ImageFeatures, real: np.ndarray, fake: np.ndarray) -> dict[str, float | int | str]:
    """FID, precision and recall of ``fake`` against ``real``, and the fake set's IS where ``space`` has logits."""
    real_f, fake_f = extract(space, real), extract(space, fake)
    record: dict[str, float | int | str] = {
        "features": space.name,
        "num_real": len(real),
        "num_fake": len(fake),
        "fid": fid_from_features(real_f, fake_f),
    }
    record["precision"], record["recall"] = precision_recall(real_f.float(), fake_f.float())
    if space.logits is not None:
        record["inception_score"], record["inception_score_std"] = inception_score(
            space.logits(fake_f.float()).double()
        )
    return record
