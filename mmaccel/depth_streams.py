"""Speculation along time for the depth-transformer layout (CSM, Moshi): a backbone predicts codebook 0 of each
frame, a small depth decoder the other codebooks of that frame, one after another.

A window of ``L`` drafted frames (all ``K`` codebooks) is verified in ONE backbone forward over the last committed
frame and the drafts, which gives the backbone's hidden state at each of the ``L + 1`` window positions. The depth
decoder then runs for every window position at once, batched over ``B * (L + 1)`` rows: codebook 0 is drawn from
the backbone's head, codebooks ``1 .. K - 1`` from the depth decoder (``K - 1`` small depth forwards for the whole
window). That yields, at every position ``i``, the frame the model itself produces given the committed prefix and
drafts ``< i``.

The rule is sample-and-match on whole frames: draft ``i`` is accepted when it equals the model's frame ``i`` and
every draft before it was accepted; the first mismatch is replaced by the model's frame there (or the window's
last frame when all match). Every committed frame is therefore the model's own draw given the committed prefix,
the exact rule for one-hot frame drafts: the output distribution is AR's for any drafter, and greedy output is
token-identical to the family's own greedy ``generate`` (tested on CSM and Moshi). Rejected positions seed the next
window (Jacobi iteration on frames); positions past the window start as a copy of the last frame (frame-repeat).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from .models.base import ModelOutput
from .sampling import SampleRNG, SamplingConfig, sample, target_probs
from .streams import P_INITS, FrameJacobiDrafter, StreamDecoder, StreamOutput, StreamRun, StreamState

#: Frame-level verification is exact: the lossless rules of the method table all run as sample-and-match here.
LOSSLESS_RULES = ("exact", "greedy", "sjd")


class DepthStreamModel(Protocol):
    """What :class:`DepthStreamDecoder` drives. ``forward`` takes frames ``[B, T, K]`` and returns codebook-0
    ``logits`` ``[B, T, V]`` and the backbone's ``hidden`` ``[B, T, D]``; ``prefill`` the same at the prompt's last
    position; ``depth`` completes frames from hidden states and codebook-0 tokens, calling ``pick(logits, k)`` to
    draw codebook ``k``; ``is_stop`` marks end-of-speech frames ``[B, S, K] -> [B, S]`` (all False if none).
    Optional: ``pins(steps [B, T], cache) -> (mask [B, T, K], tokens [B, T, K])``, slots of generated steps that
    the prompt fixes whatever the model draws (Moshi's delay pattern pins the first step's delayed codebooks)."""

    num_streams: int
    vocab_size: int

    def new_cache(self, batch_size: int, max_length: int) -> Any: ...
    def prefill(self, prompt: Any, cache: Any) -> ModelOutput: ...
    def forward(self, frames: torch.Tensor, positions: torch.Tensor, cache: Any) -> ModelOutput: ...
    def depth(
        self, hidden: torch.Tensor, first: torch.Tensor, pick: Callable[[torch.Tensor, int], torch.Tensor]
    ) -> torch.Tensor: ...
    def is_stop(self, frames: torch.Tensor) -> torch.Tensor: ...

    @property
    def device(self) -> torch.device: ...


class DepthStreamDecoder:
    """Generates frames ``[B, N, K]`` from a :class:`DepthStreamModel`, AR (``drafter=None``) or speculative with
    a :class:`FrameJacobiDrafter` (``rule`` must be lossless: frames are verified by sample-and-match)."""

    def __init__(
        self,
        model: DepthStreamModel,
        drafter: FrameJacobiDrafter | None = None,
        rule: str = "exact",
        sampling: SamplingConfig | None = None,
    ):
        if rule not in LOSSLESS_RULES:
            raise ValueError(
                f"rule {rule!r} is not available for the depth-transformer layout; use one of {list(LOSSLESS_RULES)}"
            )
        if drafter is not None and drafter.init in P_INITS:
            raise ValueError(
                f"init {drafter.init!r} draws from the model's per-codebook p, which the depth-transformer layout "
                "does not expose (its frames are verified whole); use init=repeat or init=random"
            )
        self.model, self.drafter = model, drafter
        self.sampling = sampling or SamplingConfig()

    def _frames(self, out: ModelOutput, rng: SampleRNG) -> torch.Tensor:
        """The model's frame at every position of ``out``: codebook 0 from the backbone head, the rest from the
        depth decoder, batched over all positions; one uniform per (position, codebook) from each sample's stream."""
        b, t, _ = out.logits.shape
        k = self.model.num_streams
        u = rng.uniform(t, k).reshape(b * t, k)
        first = sample(target_probs(out.logits.reshape(b * t, -1), self.sampling), u[:, 0])

        def pick(logits: torch.Tensor, book: int) -> torch.Tensor:
            return sample(target_probs(logits, self.sampling), u[:, book])

        frames = self.model.depth(out.hidden.reshape(b * t, -1), first, pick)
        return frames.view(b, t, k)

    def _pinned(self, frames: torch.Tensor, steps: torch.Tensor, cache: Any) -> torch.Tensor:
        """``frames`` ``[B, T, K]`` at generated ``steps`` ``[B, T]`` with the model's pinned slots written in."""
        pins = getattr(self.model, "pins", None)
        if pins is None:
            return frames
        mask, tokens = pins(steps, cache)
        return torch.where(mask, tokens, frames)

    def _stops(self, state: StreamState, stop_at: torch.Tensor) -> torch.Tensor:
        slots = state.generated.shape[1]
        index = torch.arange(slots, device=state.count.device)
        hit = self.model.is_stop(state.generated) & (index < state.count[:, None])
        return torch.where(hit, index, slots).min(1).values.minimum(stop_at)

    @torch.no_grad()
    def generate(
        self, prompt: Any, max_steps: int, seeds: Sequence[int] | None = None, progress: bool = False
    ) -> StreamOutput:
        w = self.drafter.window if self.drafter is not None else 0
        run = StreamRun.open(self.model, prompt, max_steps, seeds, w, progress)
        state, cache, stats, k, batch, device = run.state, run.cache, run.stats, run.k, run.batch, run.device
        first = self._frames(self.model.prefill(prompt, cache), state.rng)
        state.generated[:, 0] = self._pinned(first, state.count.new_zeros(batch, 1), cache)[:, 0]
        stats.nfe += 1
        stop_at = torch.full((batch,), run.slots, dtype=torch.long, device=device)
        if self.drafter is not None:
            self.drafter.begin(state)
        ar = torch.arange(w + 1, device=device)
        no_kept = torch.zeros(batch, k, dtype=torch.bool, device=device)
        while True:
            stop_at = self._stops(state, stop_at)
            state.done |= (state.count >= max_steps) | (state.count > stop_at)
            if bool(state.done.all()):
                break
            positions = state.last_pos[:, None] + ar
            if self.drafter is None:
                drafts = state.generated.new_zeros(batch, 0, k)
            else:
                drafts, _ = self.drafter.propose(state)
                drafts = self._pinned(drafts, state.count[:, None] + ar[:w], cache)
            out = self.model.forward(torch.cat([state.last_frame[:, None], drafts], 1), positions, cache)
            # frame i is the model's frame at step count + i (drafts < i as its past)
            frames = self._pinned(self._frames(out, state.rng), state.count[:, None] + ar, cache)  # [B, L + 1, K]
            match = (frames[:, :w] == drafts).all(-1)
            n = match.long().cumprod(1).sum(1)
            nxt = frames.gather(1, n.view(-1, 1, 1).expand(-1, 1, k)).squeeze(1)
            stats.nfe += 1
            committed = StreamDecoder._commit(
                state, drafts, n, nxt, no_kept, run.accept_step, run.from_draft, stats.nfe - 1
            )
            stats.tokens_per_step.append(committed)
            if self.drafter is not None:
                self.drafter.update_frames(state, frames, n)
            run.bar.update(int(committed.max()))
        return run.close(max_steps, state.count.clamp(max=max_steps).minimum(stop_at + 1))


__all__ = ["LOSSLESS_RULES", "DepthStreamDecoder", "DepthStreamModel"]
