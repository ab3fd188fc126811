"""Speech quality measures: a Frechet distance between feature sets, codec-token agreement, mel-cepstral
distortion (MCD) with dynamic time warping."""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from scipy.fft import dct

#: Mel-cepstral coefficients compared by :func:`mel_cepstral_distortion` (c1..c24; c0, the energy, left out).
CEPSTRA = 24


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


def mel_cepstra(logmel: np.ndarray, order: int = CEPSTRA) -> np.ndarray:
    """``[T, M]`` log-mel frames (natural log of magnitude) -> ``[T, order]`` mel cepstra ``c1 .. c_order``.

    The real cepstrum of the log spectrum sampled at ``M`` mel bands: ``c_d = 1/M sum_m log S_m cos(pi d (m + 1/2)
    / M)``, the scale MCD's dB constant assumes (an orthonormal DCT would inflate it by ``sqrt(M / 2)``)."""
    m = logmel.shape[-1]
    return dct(logmel, type=2, axis=-1)[:, 1 : order + 1] / (2 * m)


def dtw_path_cost(cost: np.ndarray) -> tuple[float, int]:
    """Dynamic time warping over a ``[T1, T2]`` local cost: the cheapest monotone path's total and its length.

    The recursion runs over anti-diagonals (``T1 + T2`` vector steps, each diagonal at once)."""
    t1, t2 = cost.shape
    total = np.full((t1 + 1, t2 + 1), np.inf)
    steps = np.zeros((t1 + 1, t2 + 1), dtype=np.int64)
    total[0, 0] = 0.0
    for diagonal in range(2, t1 + t2 + 1):
        i = np.arange(max(1, diagonal - t2), min(t1, diagonal - 1) + 1)
        j = diagonal - i
        options = np.stack([total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]])
        best = options.argmin(0)
        prev_i, prev_j = i - (best != 2), j - (best != 1)
        total[i, j] = cost[i - 1, j - 1] + options[best, np.arange(len(i))]
        steps[i, j] = steps[prev_i, prev_j] + 1
    return float(total[t1, t2]), int(steps[t1, t2])


def mel_cepstral_distortion(logmel: np.ndarray, reference: np.ndarray) -> float:
    """MCD in dB (Kubichek 1993) between two log-mel sequences ``[T, M]``, frames aligned by DTW:
    ``10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2)`` averaged along the warping path."""
    a, b = mel_cepstra(logmel), mel_cepstra(reference)
    frame_cost = np.sqrt(2.0 * ((a[:, None] - b[None]) ** 2).sum(-1)) * (10.0 / np.log(10.0))
    total, length = dtw_path_cost(frame_cost)
    return total / length
