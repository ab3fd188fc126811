"""Clip sets as FVD scripts pass them: a folder of clip files, or an ``.npz`` of ``arr_0`` uint8 ``[N, T, H, W, 3]``.

A clip file is an animated PNG or GIF (read with PIL) or an MP4 (read with PyAV, when it is installed). PIL's
writers merge a frame identical to the previous one into a longer frame; a reader that counted frames would then
see a still clip shorter than it is, so every frame counts ``round(duration / FRAME_MS)`` times when its duration
is a multiple of :data:`FRAME_MS` (the duration ``mmaccel sample video`` writes).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

#: The frame duration (ms) of the clips ``mmaccel sample video`` writes (4 frames a second).
FRAME_MS = 250
CLIP_SUFFIXES = (".png", ".gif", ".mp4")


def clip_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in CLIP_SUFFIXES and not p.name.startswith("."))


def read_clip(path: str | os.PathLike) -> np.ndarray:
    """A clip file as uint8 ``[T, H, W, 3]``; an unreadable file raises ValueError naming it."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        return _read_mp4(path)
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            frames = []
            for frame in ImageSequence.Iterator(image):
                duration = frame.info.get("duration") or 0
                repeat = round(duration / FRAME_MS) if duration and duration % FRAME_MS == 0 else 1
                frames += [np.asarray(frame.convert("RGB"), dtype=np.uint8)] * max(repeat, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read clip {str(path)!r}: {err}") from None
    return np.stack(frames)


def _read_mp4(path: Path) -> np.ndarray:
    if importlib.util.find_spec("av") is None:
        raise ValueError(f"reading {str(path)!r} needs PyAV (pip install av)")
    import av

    try:
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    except (av.error.FFmpegError, ValueError) as err:
        raise ValueError(f"cannot read clip {str(path)!r}: {err}") from None


def load_video_set(path: str | os.PathLike, flag: str) -> np.ndarray:
    """uint8 ``[N, T, H, W, 3]`` from a folder (its clip files, sorted by name) or an ``.npz`` holding ``arr_0``.

    Errors name ``flag`` (e.g. ``--real``): a missing path, an unreadable clip or array, clips of mixed shapes.
    """
    from .image_sets import load_set

    return load_set(path, flag, clip_files, read_clip, "[N, T, H, W, 3]", "clips", _shape)


def _shape(clip: np.ndarray) -> str:
    return f"{clip.shape[0]} frames of {clip.shape[2]}x{clip.shape[1]}"


def check_video_pair(real: np.ndarray, fake: np.ndarray, minimum: int = 2) -> None:
    """Two sets FVD compares: each of ``minimum`` clips or more (a covariance needs two), one clip shape."""
    for flag, clips in (("--real", real), ("--fake", fake)):
        if len(clips) < minimum:
            raise ValueError(f"{flag} holds {len(clips)} clip(s); FVD needs at least {minimum}")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"--real clips are {_shape(real[0])} but --fake clips are {_shape(fake[0])}; compare sets of one shape"
        )
