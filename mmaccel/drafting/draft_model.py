"""Drafting with a smaller model (Leviathan et al. 2023; Chen et al. 2023)."""

from __future__ import annotations

import torch

from ..models.base import ModelOutput, TokenModel, reorder
from ..sampling import SamplingConfig, sample, target_probs
from .base import Draft, Drafter, check_window


class DraftModelDrafter(Drafter):
    """A smaller model behind the same :class:`TokenModel` interface drafts ``window`` tokens autoregressively.

    It keeps its own position-addressed cache in step with the target's: each proposal first rewrites the last
    two committed tokens (the second-last may be a fully accepted draft it never forwarded), then drafts.
    ``sampling`` defaults to the target's settings, so ``q`` is the draft model's processed distribution.
    """

    def __init__(self, model: TokenModel, window: int = 4, sampling: SamplingConfig | None = None):
        self.model = model
        self.window = check_window(window)
        self.sampling = sampling

    def begin(self, state, prefill: ModelOutput) -> None:
        if self.model.vocab_size != state.vocab_size:
            raise ValueError(
                f"draft model vocabulary ({self.model.vocab_size}) differs from the target's ({state.vocab_size})"
            )
        self._sampling = self.sampling or state.sampling
        self.cache = self.model.new_cache(state.batch_size, state.max_length)
        self.model.prefill(state.prompt, self.cache)
        state.stats.draft_nfe += 1
        self._first = True

    def resize(self, state, window: int) -> None:
        self.window = check_window(window)  # each proposal drafts `window` tokens afresh

    def reorder(self, rows: torch.Tensor) -> None:
        reorder(self.model, self.cache, rows)

    @torch.no_grad()
    def propose(self, state) -> Draft:
        w = self.window
        if self._first:  # the prompt is in the cache; only the first generated token is new
            tokens, positions = state.last_token[:, None], state.last_pos[:, None]
            self._first = False
        else:
            tokens = state.generated.gather(1, (state.count[:, None] - 2 + torch.arange(2, device=state.device)))
            positions = state.last_pos[:, None] - 1 + torch.arange(2, device=state.device)
        uniforms = state.rng.uniform(w)
        drafts, qs = [], []
        for i in range(w):
            logits = self.model.forward(tokens, positions, self.cache).logits[:, -1]
            state.stats.draft_nfe += 1
            q = target_probs(logits, self._sampling)
            token = sample(q, uniforms[:, i])
            drafts.append(token)
            qs.append(q)
            tokens, positions = token[:, None], positions[:, -1:] + 1
        return Draft(torch.stack(drafts, 1), torch.stack(qs, 1))
