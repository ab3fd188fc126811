"""Procedural video clips: one shape moving over a fixed background, built on :mod:`mmaccel.data.scenes`.

The class fixes the shape kind and the motion (``CLASSES[i] = (kind, motion)``); colour, size, start
position and background vary per clip. Everything is deterministic from the seed, so held-out sets are
disjoint seed ranges (see ``SEEDS``).
"""

from __future__ import annotations

import copy

import numpy as np

from mmaccel.data.scenes import Scene, _random_background, random_shape, render

KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star")
MOTIONS: tuple[str, ...] = ("right", "down")
CLASSES: tuple[tuple[str, str], ...] = tuple((k, m) for k in KINDS for m in MOTIONS)
"""Class ``i`` is ``CLASSES[i]`` = (shape kind, motion)."""
NUM_CLASSES: int = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(f"{k}-{m}" for k, m in CLASSES)

# Disjoint seed bases: GPT training, classifier training, bench reference set, noise-floor reference, VQ decoder
# tuning (the GPT's continued runs drew 5000 and 7000).
SEEDS: dict[str, int] = {"gpt": 1000, "classifier": 2000, "reference": 3000, "reference2": 4000, "vq_decoder": 9000}

# Travel over the clip, as a fraction of the frame side (start to end).
_TRAVEL = 0.4


def clip_scenes(label: int, rng: np.random.Generator, frames: int = 8) -> list[Scene]:
    """The ``frames`` scenes of one clip of class ``label``."""
    if not isinstance(label, (int, np.integer)) or not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label must be an int in [0, {NUM_CLASSES}), got {label!r}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    kind, motion = CLASSES[int(label)]
    shape = random_shape(rng, kind=kind, size_range=(0.35, 0.5), texture="solid", colour_jitter=20)
    half = shape.size / 2
    lo, hi = half, 1 - half - _TRAVEL
    along = float(rng.uniform(lo, max(lo, hi)))
    across = float(rng.uniform(half, 1 - half))
    background = _random_background(rng, [shape.rgb], textures=("flat", "gradient"))
    out = []
    for t in range(frames):
        s = copy.copy(shape)
        pos = along + _TRAVEL * t / max(1, frames - 1)
        s.center = (pos, across) if motion == "right" else (across, pos)
        out.append(Scene(shapes=[s], **background))
    return out


def sample_clip(label: int, rng: np.random.Generator, frames: int = 8, size: int = 32) -> np.ndarray:
    """One uint8 clip [frames, size, size, 3] of class ``label``."""
    return np.stack([render(s, size=size) for s in clip_scenes(label, rng, frames)])


def make_clips(n: int, seed: int, frames: int = 8, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``n`` balanced, shuffled clips and labels: (uint8 [n, frames, size, size, 3], int64 [n])."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % NUM_CLASSES)
    clips = np.empty((n, frames, size, size, 3), dtype=np.uint8)
    for i, y in enumerate(labels):
        clips[i] = sample_clip(int(y), rng, frames, size)
    return clips, labels
