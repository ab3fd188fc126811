"""Checks for loading a Hugging Face checkpoint folder (image families, Emu3 video, ...).

A folder that is not the model's fails before transformers reads it, naming what is at fault: the folder, its
``config.json``, the ``model_type`` in it (with a hint where an original, unconverted release is recognised), or a
key every transformers conversion writes. After loading, weights the checkpoint lacks are named too: transformers
would otherwise leave them random with only a log line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path`` (e.g. a folder's ``config.json``); None if missing, unreadable or not an object."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def hf_config(folder: str | os.PathLike) -> dict | None:
    """The ``config.json`` object of ``folder``; None when the folder or the file is missing or unreadable."""
    folder = Path(folder)
    return read_json(folder / "config.json") if folder.is_dir() else None


def checked_config(
    folder: str | os.PathLike,
    model_type: str,
    model: str,
    expected: str,
    required: tuple[str, ...] = (),
    originals: dict[str, str] | None = None,
) -> dict:
    """``folder``'s ``config.json``, checked to be a transformers ``model_type`` checkpoint holding ``required``.

    ``model`` names the model in messages and ``expected`` says what its folder holds. ``originals`` maps the
    ``model_type`` of an original custom-code release to a converted checkpoint, named in the mismatch message.
    Raises FileNotFoundError for a missing folder or config.json, ValueError for the rest.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; {model} needs {expected}")
    config = read_json(path)
    if config is None:
        raise ValueError(f"{path} is not a readable JSON object; {model} needs {expected}")
    found = config.get("model_type")
    if found != model_type:
        hint = ""
        if str(found) in (originals or {}):
            hint = f" (an original custom-code layout; use the transformers conversion, e.g. {originals[str(found)]})"
        raise ValueError(f"{path}: model_type is {found!r}, not {model_type!r}{hint}")
    for key in required:
        if not config.get(key):
            raise ValueError(f"{path} has no {key!r}: not a transformers {model} checkpoint")
    return config


def load_complete(model_class: Any, folder: str | os.PathLike, model: str, may_miss: tuple[str, ...] = ()) -> Any:
    """``model_class.from_pretrained(folder)`` in the checkpoint's dtype; ValueError when the checkpoint lacks a
    weight other than ``may_miss`` (e.g. an ``lm_head`` tied to the embedding)."""
    loaded, info = model_class.from_pretrained(folder, dtype="auto", output_loading_info=True)
    missing = sorted(k for k in info["missing_keys"] if k not in may_miss)
    if missing:
        raise ValueError(f"{folder} lacks {len(missing)} {model} weights the config needs, e.g. {missing[:3]}")
    return loaded


__all__ = ["checked_config", "hf_config", "load_complete", "read_json"]
