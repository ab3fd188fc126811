"""Jacobi-window drafting, as in Speculative Jacobi Decoding (Teng et al. 2024)."""

from __future__ import annotations

from typing import Protocol

import torch

from ..models.base import ModelOutput
from ..sampling import sample
from .base import Draft, Drafter, check_window, one_hot


class WindowInit(Protocol):
    """Initialises new window positions.

    ``context[b, i]`` holds generated token ``i`` for every ``i < index[b, 0]`` (committed tokens, then the
    window's surviving drafts); ``index`` ``[B, K]`` are the generated-token indices to fill (contiguous and
    increasing); ``uniforms`` ``[B, K]`` are the sample's own random numbers. Returns ``[B, K]`` tokens.
    Modalities plug spatial or temporal initialisation in here.
    """

    def __call__(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor: ...


class UniformInit:
    """A token drawn uniformly from ``[0, vocab)``, or from ``allowed`` token ids when given."""

    def __init__(self, vocab: int, allowed: torch.Tensor | None = None):
        self.vocab = vocab
        self.allowed = allowed

    def __call__(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        if self.allowed is None:
            return (uniforms * self.vocab).long().clamp_(max=self.vocab - 1)
        allowed = self.allowed.to(uniforms.device)
        pick = (uniforms * len(allowed)).long().clamp_(max=len(allowed) - 1)
        return allowed[pick]


class JacobiDrafter(Drafter):
    """Keeps a window of ``window`` guesses for the tokens after the committed prefix.

    After each verification the window slides to the new prefix end. Positions that the verifying forward has
    already seen get a fresh sample from the target distribution computed there (their ``q`` is that
    distribution, which SJD's criterion compares against at the next iteration); positions beyond it are
    initialised by ``init`` (random by default) with a one-hot ``q``.
    """

    def __init__(self, window: int = 16, init: WindowInit | None = None):
        self.window = check_window(window)
        self.init = init

    def begin(self, state, prefill: ModelOutput) -> None:
        self._init = self.init or UniformInit(state.vocab_size)
        b, w = state.batch_size, self.window
        start = state.count.clone()
        index = start[:, None] + torch.arange(w, device=start.device)
        self.tokens = self._init(state.generated, index, state.rng.uniform(w)).to(state.device)
        self.q = one_hot(self.tokens, state.vocab_size)
        assert self.tokens.shape == (b, w)

    def propose(self, state) -> Draft:
        return Draft(self.tokens, self.q)

    def update(self, state, out: ModelOutput, p: torch.Tensor, accepted: torch.Tensor) -> None:
        w = self.window
        ar = torch.arange(w, device=p.device)
        # New window slot k is old verify row j = accepted + 1 + k; rows up to w (the bonus row) exist.
        rows = accepted[:, None] + 1 + ar
        seen = rows <= w
        p_rows = p.gather(1, rows.clamp(max=w)[..., None].expand(-1, -1, p.shape[-1]))
        refreshed = sample(p_rows, state.rng.uniform(w))
        n_seen = seen.sum(-1)
        context = state.generated.clone()
        context.scatter_(1, state.count[:, None] + ar, torch.where(seen, refreshed, 0))
        fresh_index = (state.count + n_seen)[:, None] + ar
        fresh = self._init(context, fresh_index, state.rng.uniform(w)).to(p.device)
        fresh = fresh.gather(1, (ar - n_seen[:, None]).clamp(min=0))
        self.tokens = torch.where(seen, refreshed, fresh)
        self.q = torch.where(seen[..., None], p_rows, one_hot(self.tokens, p.shape[-1]))
