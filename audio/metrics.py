"""Speech quality measures that need no recogniser: a Frechet distance over log-mel statistics, token agreement."""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from .codec import log_mel


def mel_features(waveforms: list[np.ndarray]) -> np.ndarray:
    """Per utterance: the mean and standard deviation of each log-mel bin over time, ``[N, 160]``."""
    out = []
    for w in waveforms:
        mel = log_mel(torch.from_numpy(np.ascontiguousarray(w))[None])[0]
        out.append(torch.cat([mel.mean(0), mel.std(0)]).numpy())
    return np.stack(out).astype(np.float64)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` and ``b`` (Heusel et al. 2017's formula)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


def token_agreement(tokens: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """Fraction of codec tokens equal to the reference's at the same (frame, codebook), over the shorter length."""
    same = total = 0
    for a, b in zip(tokens, reference):
        n = min(len(a), len(b))
        same += int((a[:n] == b[:n]).sum())
        total += max(len(a), len(b)) * a.shape[1]
    return same / max(total, 1)
