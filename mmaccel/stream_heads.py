"""Multiple cross-modal token prediction (MCTP) heads for codec streams, verified (VITA-Audio, Long et al. 2025).

VITA-Audio's MCTP modules guess the next frames' audio tokens from the backbone's hidden state in the same forward
and commit them unverified (3-5x fewer forwards, lossy). Here the same idea drafts a window for
:class:`~mmaccel.streams.StreamDecoder`, whose acceptance rule verifies every guess, so under the exact or SJD
rule the output is AR's (tested) and relaxed rules (LANTERN, GSD) trade quality for acceptance as with any draft.

Design: :class:`FrameHeads` holds ``H`` heads in Medusa's form (the core :class:`~mmaccel.drafting.heads.DraftHeads`
with a ``K x V`` output reshaped per codebook): head ``j`` maps the hidden state at the position that predicted step
``s`` to the ``K`` codebook distributions of step ``s + 1 + j``, all codebooks of a step drawn independently
(VITA-Audio chains small transformer blocks, each reading the previous block's state and tokens; the Medusa form
keeps the heads one matrix product each and reuses the core's heads). :class:`FrameHeadsDrafter` draws a window of
``H`` steps from them after every verification, from the hidden state of the row whose ``p`` gave the step just
committed, with ``q`` the heads' distributions, so the rule's ratio ``p / q`` is the true one.
:func:`frame_heads_loss` is the distillation objective (KL to the frozen backbone's own distributions, teacher
forcing over step tokens); no distilled weights ship yet.
"""

from __future__ import annotations

import torch
from torch import nn

from .drafting.base import check_window
from .drafting.heads import DraftHeads
from .sampling import SamplingConfig, sample, target_probs


class FrameHeads(nn.Module):
    """``num_heads`` MCTP heads over ``num_streams`` codebooks of ``vocab_size`` tokens: ``[..., D]`` hidden
    states to ``[..., num_heads, num_streams, vocab_size]`` logits (head ``j``: the step ``j + 1`` after the one
    the backbone's own heads predict)."""

    def __init__(self, hidden_size: int, num_streams: int, vocab_size: int, num_heads: int = 4, num_layers: int = 1):
        super().__init__()
        self.num_streams, self.vocab_size = num_streams, vocab_size
        self.heads = DraftHeads(hidden_size, num_streams * vocab_size, num_heads, num_layers)

    @property
    def num_heads(self) -> int:
        return self.heads.num_heads

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.heads(hidden)
        return logits.view(*logits.shape[:-1], self.num_streams, self.vocab_size)


class FrameHeadsDrafter:
    """A window of ``heads.num_heads`` steps x ``K`` codebooks drawn from MCTP heads (see the module docstring).

    :class:`~mmaccel.streams.StreamDecoder` runs its forwards with hidden states for a drafter with
    ``needs_hidden`` and hands it, through :meth:`see`, the hidden state that predicted the last committed step.
    """

    needs_hidden = True
    coupling = "none"
    init = "heads"

    def __init__(self, heads: FrameHeads, sampling: SamplingConfig | None = None):
        self.heads = heads.eval()
        self.window = check_window(heads.num_heads)
        self.sampling = sampling  # None: the decoder's own (its temperature)
        self._hidden: torch.Tensor | None = None

    def see(self, hidden: torch.Tensor, sampling: SamplingConfig) -> None:
        """The backbone state ``[B, D]`` that predicted the last committed step; drafts follow from it."""
        self._hidden, self._sampling = hidden, self.sampling or sampling

    def _draw(self, state) -> None:
        if self._hidden is None:
            raise RuntimeError("FrameHeadsDrafter: see(hidden) must come before begin/update")
        k, v = self.heads.num_streams, self.heads.vocab_size
        if (k, v) != (state.generated.shape[2], state.vocab_size):
            raise ValueError(
                f"MCTP heads are for {k} codebooks x {v} tokens, the model has "
                f"{state.generated.shape[2]} x {state.vocab_size}"
            )
        weight = next(self.heads.parameters())
        logits = self.heads(self._hidden.to(weight.device, weight.dtype)).float()  # [B, H, K, V]
        self.q = target_probs(logits, self._sampling)
        self.tokens = sample(self.q, state.rng.uniform(self.window, k))

    @torch.no_grad()
    def begin(self, state) -> None:
        self._draw(state)

    def propose(self, state) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens, self.q

    @torch.no_grad()
    def update(self, state, p: torch.Tensor, n: torch.Tensor) -> None:
        self._draw(state)

    def resize(self, state, window: int) -> None:
        raise ValueError("MCTP heads draft a fixed window (one step per head); window='auto' does not apply")


def frame_heads_loss(model, heads: FrameHeads, steps: torch.Tensor, prompt, temperature: float = 1.0) -> torch.Tensor:
    """The distillation loss of ``heads`` on step tokens ``steps`` ``[B, T, K]`` after ``prompt`` (teacher forcing
    through the frozen stream model): head ``j`` at the position predicting step ``t`` matches the model's own
    distributions of step ``t + 1 + j`` (KL, summed over codebooks, averaged over positions and heads)."""
    b, t, k = steps.shape
    h = heads.num_heads
    if t < h + 2:
        raise ValueError(f"steps: distillation needs at least num_heads + 2 = {h + 2} steps, got {t}")
    with torch.no_grad():
        cache = model.new_cache(b, int(prompt.lengths.max()) + t + 1)
        first = model.prefill(prompt, cache, output_hidden=True)
        positions = prompt.lengths.to(steps.device)[:, None] + torch.arange(t - 1, device=steps.device)
        out = model.forward(steps[:, :-1], positions, cache, output_hidden=True)
        logits = torch.cat([first.logits, out.logits], 1)  # row i: the model's distributions of step i
        hidden = torch.cat([first.hidden, out.hidden], 1)
        teacher = (logits.float() / temperature).log_softmax(-1)
    student = (heads(hidden.float()) / temperature).log_softmax(-1)  # [B, T, H, K, V]
    loss = hidden.new_zeros(())
    for j in range(h):  # a handful of heads, not a per-token loop
        span = t - 1 - j
        target, pred = teacher[:, 1 + j : 1 + j + span], student[:, :span, j]
        kl = nn.functional.kl_div(pred, target, log_target=True, reduction="none").sum(-1)  # [B, span, K]
        loss = loss + kl.sum(-1).mean() / h
    return loss


__all__ = ["FrameHeads", "FrameHeadsDrafter", "frame_heads_loss"]
