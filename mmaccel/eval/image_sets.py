"""Image sets as evaluation scripts pass them: a folder of image files, or an ADM-layout ``.npz`` (``arr_0``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..sample import read_image_array

#: The files of a folder that are read as images (the rest, e.g. samples.json or samples.npz, are ignored).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def load_image_set(path: str | os.PathLike, flag: str) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` from a folder (its image files, sorted by name) or an ``.npz`` holding ``arr_0``.

    Errors name ``flag`` (e.g. ``--real``): a missing path, an unreadable image or array, images of mixed sizes.
    """
    return load_set(path, flag, image_files, read_image_array, "[N, H, W, 3]", "images", _size)


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def load_set(
    path: str | os.PathLike,
    flag: str,
    files_of: Callable[[Path], list[Path]],
    read: Callable[[Path], np.ndarray],
    layout: str,
    kind: str,
    describe: Callable[[np.ndarray], str],
) -> np.ndarray:
    """A set of uint8 samples ``layout`` (``[N, ..., 3]``) from a folder (``files_of`` it, each ``read``, sorted by
    name, all of one shape) or an ``.npz`` holding ``arr_0``; errors name ``flag``, the file, and ``describe`` the
    shapes that differ."""
    path = Path(path)
    if path.is_dir():
        files = files_of(path)
        if not files:
            raise ValueError(f"{flag} {str(path)!r} holds no {kind} file")
        arrays: list[np.ndarray] = []
        for f in files:
            array = read(f)
            if arrays and array.shape != arrays[0].shape:
                raise ValueError(
                    f"{flag}: {f} is {describe(array)}, but {files[0].name} is {describe(arrays[0])}; "
                    f"a set holds {kind} of one size"
                )
            arrays.append(array)
        return np.stack(arrays)
    if path.suffix == ".npz" and path.is_file():
        try:
            with np.load(path) as data:
                if "arr_0" not in data:
                    raise ValueError(f"{flag} {str(path)!r} holds no arr_0 (the ADM evaluator's layout)")
                array = data["arr_0"]
        except (OSError, EOFError, ValueError) as err:
            if str(err).startswith(flag):
                raise
            raise ValueError(f"{flag}: cannot read {str(path)!r}: {err}") from None
        ndim = layout.count(",") + 1
        if array.dtype != np.uint8 or array.ndim != ndim or array.shape[-1] != 3:
            raise ValueError(f"{flag} {str(path)!r}: arr_0 must be uint8 {layout}, got {array.dtype} {array.shape}")
        return array
    if not path.exists():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist")
    raise ValueError(f"{flag} {str(path)!r} is neither a folder of {kind} nor an .npz file")


def check_pair(real: np.ndarray, fake: np.ndarray, minimum: int = 2) -> None:
    """Two sets a distance compares: each of ``minimum`` images or more (a covariance needs two), one image size."""
    for flag, images in (("--real", real), ("--fake", fake)):
        if len(images) < minimum:
            raise ValueError(f"{flag} holds {len(images)} image(s); FID needs at least {minimum}")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"--real images are {real.shape[2]}x{real.shape[1]} but --fake images are {fake.shape[2]}x{fake.shape[1]}; "
            "compare sets of one size"
        )
