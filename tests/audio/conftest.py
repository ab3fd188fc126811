"""Shared by the audio tests: the distribution checks' chi-square, a drafter of partly right frames."""

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from mmaccel.streams import FrameJacobiDrafter


def _two_sample_pvalue(a: np.ndarray, b: np.ndarray, min_count: int = 10) -> float:
    """Chi-square homogeneity p-value of two samples of cell ids (cells with fewer than ``min_count`` draws in
    both samples together are left out)."""
    cells = np.union1d(a, b)
    table = np.stack([[np.sum(a == c) for c in cells], [np.sum(b == c) for c in cells]])
    table = table[:, table.sum(0) >= min_count]
    return chi2_contingency(table)[1]


@pytest.fixture
def two_sample_pvalue():
    """``two_sample_pvalue(a, b)``: are two samples of cell ids drawn from one distribution?"""
    return _two_sample_pvalue


class KnownFutureDrafter(FrameJacobiDrafter):
    """Drafts the known AR continuation with one frame in three corrupted: exercises acceptance and rejection."""

    def __init__(self, window, future):
        super().__init__(window)
        self.future = future

    def propose(self, state):
        w, (_, n, k) = self.window, self.future.shape
        idx = (state.count[:, None] + torch.arange(w)).clamp(max=n - 1)
        drafts = self.future.gather(1, idx[..., None].expand(-1, -1, k)).clone()
        drafts[:, 2::3] = (drafts[:, 2::3] + 1) % state.vocab_size
        return drafts, None


@pytest.fixture
def known_future_drafter():
    """``known_future_drafter(window, future [B, N, K])``: a drafter of the known frames, one in three wrong."""
    return KnownFutureDrafter
