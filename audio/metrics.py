"""Speech quality measures: a Frechet distance between feature sets, codec-token agreement."""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` and ``b`` (Heusel et al. 2017's formula)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


def token_agreement(tokens: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """Fraction of codec tokens equal to the reference's at the same (frame, codebook), over the shorter length."""
    same = total = 0
    for a, b in zip(tokens, reference):
        n = min(len(a), len(b))
        same += int((a[:n] == b[:n]).sum())
        total += max(len(a), len(b)) * a.shape[1]
    return same / max(total, 1)
