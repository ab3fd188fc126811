"""Output files are written to a temporary name and renamed, so a failure never leaves a half-written file."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before any work if ``path`` cannot be written: missing or unwritable folder, or a folder itself."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"output directory is not writable: {parent}")
    if path.is_dir():
        raise IsADirectoryError(f"output path is a directory: {path}")
    return path


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = check_writable(path)
    tmp = _create_temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> str:
    """An empty new file beside ``path``, created with mode 0o666 less the umask, as ``open(path, "w")`` would:
    ``tempfile.mkstemp`` makes files only their owner can read, which the rename would hand on to ``path``."""
    while True:
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return str(tmp)
        except FileExistsError:
            continue


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    def dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)

    write_atomic(path, dump)


def save_image_atomic(image: Any, path: str | os.PathLike) -> None:
    """Save a PIL image; the format follows ``path``'s suffix."""
    write_atomic(path, lambda tmp: image.save(tmp, format=image.format or _format(path)))


def _format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}.get(suffix, "PNG")
