"""Image sets as evaluation scripts pass them: a folder of image files, or an ADM-layout ``.npz`` (``arr_0``)."""

from __future__ import annotations

import os
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
    path = Path(path)
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise ValueError(f"{flag} {str(path)!r} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
        arrays = []
        for f in files:
            array = read_image_array(f)
            if arrays and array.shape != arrays[0].shape:
                raise ValueError(
                    f"{flag}: {f} is {array.shape[1]}x{array.shape[0]}, but {files[0].name} is "
                    f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; a set holds images of one size"
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
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(f"{flag} {str(path)!r}: arr_0 must be uint8 [N, H, W, 3], got {array.dtype} {array.shape}")
        return array
    if not path.exists():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist")
    raise ValueError(f"{flag} {str(path)!r} is neither a folder of images nor an .npz file")


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
