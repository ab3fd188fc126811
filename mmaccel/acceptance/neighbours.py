"""Nearest tokens in an embedding space (VQ codebook, codec codebook, token embeddings)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


def nearest_neighbours(embeddings: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """For every token, the ``k`` other tokens nearest by L2 distance, nearest first: ``[V, k]`` (int32).

    Computed in row chunks so a 16k-entry codebook never needs the full ``V x V`` distance matrix at once.
    """
    vocab = embeddings.shape[0]
    if not 1 <= k < vocab:
        raise ValueError(f"k must be in [1, vocabulary size - 1] = [1, {vocab - 1}], got {k}")
    emb = embeddings.detach().float()
    out = torch.empty(vocab, k, dtype=torch.int32, device=emb.device)
    for start in range(0, vocab, chunk):
        rows = emb[start : start + chunk]
        dist = torch.cdist(rows, emb)
        # A token is not its own neighbour; duplicated codes stay as zero-distance neighbours of each other.
        dist[torch.arange(rows.shape[0]), torch.arange(start, start + rows.shape[0])] = float("inf")
        out[start : start + chunk] = dist.topk(k, dim=-1, largest=False).indices.to(torch.int32)
    return out


def cache_root() -> Path:
    """Fallback folder for computed tables when a checkpoint's folder is read-only:
    ``$MMACCEL_CACHE`` or ``~/.cache/mmaccel``."""
    return Path(os.environ.get("MMACCEL_CACHE", Path.home() / ".cache" / "mmaccel"))


def cached_neighbours(codebook: torch.Tensor, k: int, folder: str | os.PathLike | None) -> torch.Tensor:
    """LANTERN's ``[V, k]`` nearest-code table, computed once per codebook and kept on disk.

    The file is ``lantern_k{k}_{digest}.safetensors`` in ``folder`` (beside the checkpoint) or, when that
    is missing or read-only, under :func:`cache_root`; the digest of the codebook's bytes keys it, so a
    changed codebook never reuses a stale table. A corrupt table file is recomputed and replaced.
    """
    from safetensors.torch import load_file, save_file

    from ..io import write_atomic

    table = codebook.detach().float().cpu().contiguous()
    digest = hashlib.sha256(table.numpy().tobytes()).hexdigest()[:16]
    name = f"lantern_k{k}_{digest}.safetensors"
    candidates = []
    if folder is not None and Path(folder).is_dir() and os.access(folder, os.W_OK):
        candidates.append(Path(folder))
    candidates.append(cache_root() / "neighbours")
    for place in candidates:
        path = place / name
        if path.is_file():
            try:
                stored = load_file(str(path))["neighbours"]
                if stored.shape == (table.shape[0], k):
                    return stored.to(codebook.device)
            except Exception:  # noqa: BLE001 - safetensors raises several types for a damaged file
                pass  # recomputed and rewritten below
    neighbours = nearest_neighbours(table, k)
    place = candidates[0]
    try:
        place.mkdir(parents=True, exist_ok=True)
        write_atomic(place / name, lambda tmp: save_file({"neighbours": neighbours}, tmp))
    except OSError:
        pass  # a cache that cannot be written only costs the recomputation next time
    return neighbours.to(codebook.device)
