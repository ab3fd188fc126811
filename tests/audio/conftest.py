"""Shared by the audio tests' distribution checks."""

import numpy as np
import pytest
from scipy.stats import chi2_contingency


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
