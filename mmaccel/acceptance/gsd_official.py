"""GSD's acceptance probability as the authors' code computes it (``gsd:variant=official``).

Source: github.com/junhyukso/GSD at commit 4216c7c2bd5d04be12410adb07143af4cd7f7b88, file
``scheduler/jacobi_iteration_lumina_mgpt.py``, ``SpeculativeSampler.__call__`` (the acceptance test) and
``reject_sampling_single_token`` (the draw on rejection); the distance table is built in the decoding loop of the
same file (``head_img_sims``). For draft ``x`` verified by target distribution ``p`` (with logits ``l``) and drawn
from ``q``, the official code does:

1. ``order = l.sort()`` (ascending), ``k`` = the position of ``x`` in ``order``, window ``order[k-7 : k+7]``:
   the ranks ``k-7 .. k+6`` (7 tokens below ``x``, ``x`` itself, 6 above), a Python slice, so near the top it is
   cut at the vocabulary's end (the argmax gets ranks ``V-8 .. V-1``) and for ``k < 7`` the start ``k - 7`` is
   negative, i.e. ``V + k - 7``, which (for ``V >= 14``) is past the stop ``k + 7``: the window is **empty**, the
   ``.max()`` on it raises, and the ``except`` falls back to the exact rule ``min(1, p(x)/q(x))``.
2. keep a window token ``t`` when ``|p(t) - p(x)| < p_thr`` (0.15) and ``D[x, t] < d_thr`` (0.5), with
   ``D = |a|^2 + |b|^2 - 2 a.b`` the squared L2 distance between *raw* rows of the input embedding table.
3. ``P``, ``Q``: the masses of the kept tokens under ``p`` and ``q``; accept if ``u < min(1, P/Q)`` (no floor at
   ``p(x)/q(x)``); on rejection draw from ``norm(max(p - q, 0))``, the usual residual.

What is not reproduced, and why: the official table is ``embed_tokens.weight[:10000]`` of Lumina-mGPT (image codes
4..8195); a window holding an id above 10000 skips the distance test and one holding id 10000 itself raises an
IndexError (exact fallback). Here the table always covers the whole vocabulary (the engine checks it), so every
window token is distance-tested. Ranks are taken on ``p`` with a stable sort (ties, such as the zeros of a top-k,
in increasing token id); the official code sorts logits with ``torch.sort``, whose order among ties is not
specified (CUDA's radix sort keeps ids ascending). ``p = softmax(l)`` is monotone in ``l``, so both orders agree
wherever distinct logits do not round to the same probability.
"""

from __future__ import annotations

import torch

from .base import token_probs

#: Tokens of the window below and above the draft, in ascending order of target probability.
BELOW, ABOVE = 7, 6
#: The thresholds hard-coded in ``SpeculativeSampler.__call__``.
P_THR, D_THR = 0.15, 0.5


def official_window(p: torch.Tensor, drafts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[..., 14]`` of the slice ``order[k-7 : k+7]`` and which of the 14 slots the slice fills.

    ``order`` is ``p``'s ascending order, ``k`` the draft's position in it; the slice follows Python's rules
    (a negative start counts from the end, both ends clipped to ``[0, V]``), so ``k < 7`` gives an empty window
    whenever ``V >= 14``.
    """
    vocab = p.shape[-1]
    order = torch.sort(p, dim=-1, stable=True).indices
    rank = (order == drafts.unsqueeze(-1)).long().argmax(-1)
    start = rank - BELOW
    start = torch.where(start < 0, start + vocab, start).clamp(0, vocab)
    stop = (rank + ABOVE + 1).clamp(max=vocab)
    slots = start.unsqueeze(-1) + torch.arange(BELOW + ABOVE + 1, device=p.device)
    filled = slots < stop.unsqueeze(-1)
    return order.gather(-1, slots.clamp(max=vocab - 1)), filled


def squared_distances(embeddings: torch.Tensor, sq_norms: torch.Tensor, drafts: torch.Tensor, ids: torch.Tensor):
    """``|e_x|^2 + |e_t|^2 - 2 e_x.e_t`` for draft ``x`` and each window token ``t``, as the official table has it."""
    dots = (embeddings[ids] * embeddings[drafts].unsqueeze(-2)).sum(-1)
    return sq_norms[drafts].unsqueeze(-1) + sq_norms[ids] - 2 * dots


def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``min(1, num/den)`` as the official ``u < (num / den).clamp(max=1)`` treats it: ``x/0`` passes, ``0/0`` never."""
    return torch.nan_to_num(num / den, nan=0.0, posinf=1.0).clamp(max=1.0)


def official_accept_probability(
    p: torch.Tensor,
    q: torch.Tensor,
    drafts: torch.Tensor,
    embeddings: torch.Tensor,
    sq_norms: torch.Tensor,
    p_thr: float = P_THR,
    d_thr: float = D_THR,
) -> torch.Tensor:
    """``[B, L]`` official acceptance probabilities for ``p``, ``q`` ``[B, L, V]`` and ``drafts`` ``[B, L]``.

    ``embeddings`` ``[V, D]`` are the raw rows (not normalised) and ``sq_norms`` ``[V]`` their squared norms.
    """
    ids, filled = official_window(p, drafts)
    p_x, q_x = token_probs(p, drafts), token_probs(q, drafts)
    p_win, q_win = p.gather(-1, ids), q.gather(-1, ids)
    sq_dist = squared_distances(embeddings.to(p.device), sq_norms.to(p.device), drafts, ids)
    kept = filled & ((p_win - p_x.unsqueeze(-1)).abs() < p_thr) & (sq_dist < d_thr)
    grouped = ratio((p_win * kept).sum(-1), (q_win * kept).sum(-1))
    return torch.where(filled.any(-1), grouped, ratio(p_x, q_x))
