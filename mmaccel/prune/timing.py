"""Prefill wall times behind the bench's TTFT figures: unpruned/pruned pairs of the same requests.

This machine's speed drifts by tens of percent over a bench (other work shares its two cores), so a speed-up
is only meaningful as a ratio of two times measured a few calls apart; each helper returns every sample, and
the bench takes the medians it reports from one such measurement.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from . import prune


def prefill_time(model, batch: dict) -> float:
    """Wall time of one prefill forward, first-token logits only."""
    with torch.inference_mode():
        start = time.perf_counter()
        model(**batch, use_cache=True, logits_to_keep=1)
        return time.perf_counter() - start


def warm_up(model, batch: dict) -> None:
    """One untimed prefill, so the timed ones run with warm caches and allocator."""
    with torch.inference_mode():
        model(**batch, use_cache=True, logits_to_keep=1)


def unpruned_prefills(model, batches: list[dict] | None) -> list[float]:
    """One unpruned prefill time per batch, after a warm-up call (empty without batches)."""
    if not batches:
        return []
    warm_up(model, batches[0])
    return [prefill_time(model, batch) for batch in batches]


def paired_prefills(
    model, batches: list[dict] | None, method: str, keep: float, params: dict[str, Any], block: int = 4
) -> tuple[list[float], list[float]]:
    """Prefill times per batch (unpruned, pruned), in alternating blocks of ``block`` batches.

    Each block is timed unpruned, then pruned, each after one untimed warm-up call: both paths are measured
    warm, as in a deployment that prunes every request, and no more than a few calls apart, so the machine's
    drift cancels out of the ratio. The pruning context is entered and left outside the timed calls.
    """
    unpruned: list[float] = []
    pruned: list[float] = []
    for start in range(0, len(batches or []), block):
        chunk = batches[start : start + block]
        warm_up(model, chunk[0])
        unpruned += [prefill_time(model, batch) for batch in chunk]
        with prune(model, method, keep=keep, **params):
            warm_up(model, chunk[0])
            pruned += [prefill_time(model, batch) for batch in chunk]
    return unpruned, pruned
