"""Measured verify cost: the t(1) and t(L+1) of a bench's ceiling (step compression x t(1)/t(L+1))."""

from __future__ import annotations

import time

import numpy as np
import torch

from mmaccel.models import Prompt, TokenModel


@torch.no_grad()
def forward_times(
    model: TokenModel, prompt: Prompt, windows: list[int], context: int, repeats: int = 5
) -> dict[int, float]:
    """Median seconds of one forward of ``L + 1`` tokens after ``context`` positions, per window ``L`` (0: AR).

    ``prompt`` (equal-length rows) is prefilled, then filler tokens bring every row to ``context`` positions;
    the first of ``repeats + 1`` timed forwards is a warm-up and is dropped.
    """
    batch, start = prompt.batch_size, int(prompt.lengths.max())
    if int(prompt.lengths.min()) != start:
        raise ValueError("timing prompts must be rows of equal length")
    if context <= start:
        raise ValueError(f"context must exceed the prompt length {start}, got {context}")
    device = model.device
    out = {}
    for w in sorted({0, *windows}):
        cache = model.new_cache(batch, context + w + 4)
        model.prefill(prompt, cache)
        fill = torch.zeros(batch, context - start, dtype=torch.long, device=device)
        model.forward(fill, start + torch.arange(context - start, device=device).expand(batch, -1), cache)
        tokens = torch.zeros(batch, w + 1, dtype=torch.long, device=device)
        positions = context + torch.arange(w + 1, device=device).expand(batch, -1)
        times = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            model.forward(tokens, positions, cache)
            times.append(time.perf_counter() - t)
        out[w] = float(np.median(times[1:]))
    return out
