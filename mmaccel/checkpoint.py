"""Reading checkpoints safely and loading them with shape checks.

Weights are read only with safetensors or ``torch.load(weights_only=True)``, never by unpickling
arbitrary objects. Official release checkpoints (LlamaGen, ...) are ``.pt`` files that wrap the weights
under ``"model"`` or ``"ema"``; our own weights are plain safetensors files.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

import torch
from torch import nn

# LlamaGen's release checkpoints keep the weights under one of these keys; "ema" wins when both exist
# because the EMA weights are the ones the papers evaluate.
_WRAPPER_KEYS = ("ema", "model", "state_dict", "module")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the module it is loaded into."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` dict from a ``.safetensors`` or ``.pt/.pth/.bin`` file.

    Torch files are read with ``weights_only=True``; a dict holding the weights under ``"ema"``,
    ``"model"``, ``"state_dict"`` or ``"module"`` is unwrapped, and a ``"module."`` prefix (left by
    DistributedDataParallel) is stripped. Raises :class:`CheckpointError` naming the file when it is
    missing, corrupt, or holds no tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except Exception as err:  # safetensors raises several error types for a damaged header
            raise CheckpointError(f"cannot read safetensors file {path!r}: {err}") from err
    else:
        try:
            # LlamaGen's training script stores its argparse.Namespace beside the weights; that class
            # only holds attributes, so allowing it keeps weights_only's guarantee.
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle/zip errors differ by torch version; report them all alike
            raise CheckpointError(f"cannot read torch checkpoint {path!r} (weights_only=True): {err}") from err
        state = _unwrap(obj, path)
    if not state:
        raise CheckpointError(f"checkpoint {path!r} holds no tensors")
    return state


def _unwrap(obj: object, path: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(obj).__name__}, not a dict of tensors")
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_checked(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    *,
    ignore_missing: tuple[str, ...] = (),
    ignore_unexpected: tuple[str, ...] = (),
) -> None:
    """Load ``state_dict`` into ``module`` strictly, with errors that say what does not fit.

    Every module parameter and buffer must be present with the same shape, and every checkpoint
    tensor must be used, except names that start with a prefix listed in ``ignore_missing`` /
    ``ignore_unexpected`` (e.g. a loss network's weights stored beside the model's). ``source``
    (usually the file name) is quoted in the error. Mismatched shapes are reported as
    ``key: checkpoint (a, b) vs model (c, d)``.
    """
    expected = module.state_dict()
    problems: list[str] = []
    for key, tensor in expected.items():
        if key not in state_dict:
            if not key.startswith(ignore_missing):  # startswith(()) is False
                problems.append(f"missing key {key!r} (model shape {tuple(tensor.shape)})")
        elif tuple(state_dict[key].shape) != tuple(tensor.shape):
            problems.append(
                f"shape mismatch for {key!r}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(tensor.shape)}"
            )
    for key in state_dict:
        if key not in expected and not key.startswith(ignore_unexpected):
            problems.append(f"unexpected key {key!r} (checkpoint shape {tuple(state_dict[key].shape)})")
    if problems:
        shown = problems[:10]
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CheckpointError(
            f"checkpoint {source!r} does not fit {type(module).__name__}:\n  " + "\n  ".join(shown) + more
        )
    usable = {k: v for k, v in state_dict.items() if k in expected}
    module.load_state_dict(usable, strict=False)
