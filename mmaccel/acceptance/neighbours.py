"""Nearest tokens in an embedding space (VQ codebook, codec codebook, token embeddings)."""

from __future__ import annotations

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
