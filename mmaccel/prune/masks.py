"""The 4-D attention masks of pruned layers, built from each slot's original column.

Every layer at or after a stage attends over that stage's kept tokens only, so the model's own mask (over
the full prompt) no longer fits. These masks are rebuilt from original columns, which makes them exact for
left padding, for decode steps, and for samples that keep different numbers of tokens (their shorter rows
are left-padded with slots that attend only to themselves). With proportional attention they carry
``+ log(size)`` on every logit towards a token that stands for several.
"""

from __future__ import annotations

import torch


def real_tokens(attention: torch.Tensor | None, batch: int, total: int, device: torch.device) -> torch.Tensor:
    """(B, total) True for real (not padding) tokens, from a call's 2-D ``attention_mask`` when it has one."""
    if attention is not None and attention.ndim == 2 and attention.shape[1] == total:
        return attention.bool()
    return torch.ones(batch, total, dtype=torch.bool, device=device)


def prefill_mask(
    kept: torch.Tensor,
    valid: torch.Tensor,
    padding: torch.Tensor,
    log_size: torch.Tensor | None,
    dtype: torch.dtype,
    eager: bool,
) -> torch.Tensor:
    """The mask of a stage's layers during the prefill that ran the stage: its kept slots attend to each other.

    ``kept`` (B, Ls) are the slots' original columns, ``valid`` False for slots that only even out the kept
    counts, ``padding`` (B, L) True for the prompt's real tokens, ``log_size`` (B, Ls) or None.
    """
    return _mask(kept, valid, kept, padding, log_size, dtype, eager)


def decode_mask(
    kept: torch.Tensor,
    valid: torch.Tensor,
    padding: torch.Tensor,
    log_size: torch.Tensor | None,
    prompt_length: int,
    past: int,
    length: int,
    dtype: torch.dtype,
    eager: bool,
) -> torch.Tensor:
    """The mask of a stage's layers for a later call: ``length`` new tokens after ``past`` tokens of the full
    sequence, over the cache of the prompt's kept slots followed by every token generated since."""
    batch, device = kept.shape[0], kept.device
    # Columns past the pruned prompt are generated tokens, cached by every layer.
    tail = torch.arange(prompt_length, past + length, device=device).expand(batch, -1)
    key_col = torch.cat([kept, tail], dim=1)
    key_ok = torch.cat([valid, torch.ones_like(tail, dtype=torch.bool)], dim=1)
    query_col = torch.arange(past, past + length, device=device).expand(batch, -1)
    if log_size is not None:
        log_size = torch.nn.functional.pad(log_size, (0, key_col.shape[1] - log_size.shape[1]))
    return _mask(key_col, key_ok, query_col, padding, log_size, dtype, eager)


def _mask(
    key_col: torch.Tensor,
    key_ok: torch.Tensor,
    query_col: torch.Tensor,
    padding: torch.Tensor,
    log_size: torch.Tensor | None,
    dtype: torch.dtype,
    eager: bool,
) -> torch.Tensor:
    """Key j is visible to query i iff its original column is <= the query's, it is a real token, and it is
    not a padding slot. Boolean for SDPA; additive where eager attention or proportional attention needs it."""
    device = key_col.device
    key_ok = key_ok & padding.gather(1, key_col)
    allowed = (key_col[:, None, :] <= query_col[:, :, None]) & key_ok[:, None, :]
    # A query with nothing to attend to (a padding slot) attends to its own slot: no NaN rows in SDPA.
    offset = key_col.shape[1] - query_col.shape[1]
    own = torch.arange(query_col.shape[1], device=device)
    lonely = ~allowed.any(-1)
    allowed[:, own, own + offset] |= lonely
    allowed = allowed.unsqueeze(1)
    if log_size is not None:
        # Proportional attention: + log(size) on every logit towards a token that stands for several.
        bias = log_size.to(dtype)
        return torch.where(allowed, bias[:, None, None, :], torch.finfo(dtype).min)
    if eager:
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return allowed
