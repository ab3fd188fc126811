"""Mel-cepstral distortion with DTW: zero for a sequence against itself and against a time-stretched copy,
positive and symmetric between different speech, and the bench's mean over utterances."""

import numpy as np
import pytest

from mmaccel.audio.bench import Judge
from mmaccel.audio.metrics import dtw_path_cost, mel_cepstral_distortion


def test_dtw_takes_the_cheapest_monotone_path():
    cost = np.array([[0.0, 5.0, 5.0], [1.0, 0.0, 5.0], [5.0, 1.0, 0.0]])
    assert dtw_path_cost(cost) == (0.0, 3)
    assert dtw_path_cost(np.ones((2, 4)))[1] == 4  # a path visits max(T1, T2) cells at least


def test_mcd_ignores_timing_and_energy_but_not_spectra():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 80))
    assert mel_cepstral_distortion(x, x) == 0.0
    assert mel_cepstral_distortion(x, np.repeat(x, 2, axis=0)) == pytest.approx(0.0, abs=1e-9)
    assert mel_cepstral_distortion(x, x + 3.0) == pytest.approx(0.0, abs=1e-9)  # a gain moves c0 only
    y = rng.normal(size=(50, 80))
    assert mel_cepstral_distortion(x, y) > 1.0
    assert mel_cepstral_distortion(x, y) == pytest.approx(mel_cepstral_distortion(y, x))


def test_bench_mcd_is_a_mean_over_utterances():
    rng = np.random.default_rng(1)
    waves = [rng.normal(size=4000).astype(np.float32) * 0.1 for _ in range(2)]
    assert Judge.mcd(waves, waves) == pytest.approx(0.0, abs=1e-9)
    assert Judge.mcd(waves, waves[::-1]) > 0 and Judge.mcd(waves, None) is None
