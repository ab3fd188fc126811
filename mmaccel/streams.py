"""Speculation along time for models that emit several token streams per step (codec LMs: K codebooks a frame).

A window of ``L`` steps x ``K`` streams is verified in one forward. The acceptance rule is called unchanged with
the streams folded into the batch (``[B, L, K, V] -> [B*K, L, V]``), which gives each (sample, stream) its own
accepted prefix. A step is committed when every stream accepted it, so a sample commits ``n = min_k n_k`` steps;
in the first step not accepted by all, stream ``k`` keeps its draft when its own rule accepted it there
(``n_k > n``), else takes the rule's resampled token. The streams of one step are conditionally independent given
the past (MusicGen's delay pattern, parallel codebooks), so each stream's token there is its rule's output at a
position the rule reached, distributed as its ``p``; later steps are drawn against the committed prefix. An
exact rule thus stays exactly AR per stream, and greedy decoding stays token-identical (tested).

The model side (:class:`StreamModel`) mirrors :class:`~mmaccel.models.TokenModel` with a stream axis, plus the
layout's forced slots (codebook ``k`` before step ``k`` in the delay pattern), which the decoder fixes to token 0
in ``p`` and in the drafts so that they cost nothing, and an optional stop token on stream 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from .acceptance import AcceptanceRule, make_rule, rule_class
from .drafting.base import check_window, one_hot
from .drafting.coupling import maximal_coupling
from .models.base import ModelOutput
from .models.cache import SlotCache
from .sampling import SampleRNG, SamplingConfig, sample, target_probs
from .window import AutoWindow, measure_costs, model_key


class StreamModel(Protocol):
    """What :class:`StreamDecoder` drives: ``forward`` takes ``[B, T, K]`` tokens and returns ``[B, T, K, V]``
    logits; ``prefill`` returns the prompt's last position, ``[B, 1, K, V]``. Optional:
    ``pinned(steps [B, T], known [B, S, K]) -> (mask [B, T, K], tokens [B, T, K])``, slots that the known past fixes
    (``known``: committed steps and the window's drafts, -1 where unknown; a pin at step ``t`` may read only
    steps before ``t``)."""

    num_streams: int
    vocab_size: int
    stop_token: int | None  # on stream 0: ends a sample ``stop_lag`` steps after it is committed
    stop_lag: int

    def new_cache(self, batch_size: int, max_length: int) -> SlotCache: ...
    def prefill(self, prompt: Any, cache: SlotCache, output_hidden: bool = False) -> ModelOutput: ...
    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput: ...
    def forced(self, steps: torch.Tensor) -> torch.Tensor: ...

    @property
    def device(self) -> torch.device: ...


@dataclass
class StreamState:
    """The batch between steps: committed ``generated`` steps ``[B, N + scratch, K]`` and their ``count``."""

    rng: SampleRNG
    generated: torch.Tensor
    count: torch.Tensor
    last_pos: torch.Tensor
    done: torch.Tensor
    vocab_size: int

    @property
    def last_frame(self) -> torch.Tensor:
        idx = (self.count - 1).view(-1, 1, 1).expand(-1, 1, self.generated.shape[2])
        return self.generated.gather(1, idx).squeeze(1)


@dataclass
class StreamStats:
    """Cost and acceptance of a generation: ``accept_step`` ``[B, N]`` the forward that committed each step,
    ``from_draft`` ``[B, N, K]`` whether each token was a draft the rule kept (the frame x codebook map)."""

    nfe: int = 0
    wall_s: float = 0.0
    accept_step: torch.Tensor | None = None
    from_draft: torch.Tensor | None = None
    lengths: torch.Tensor | None = None  # [B] steps each sample generated (to its stop)
    tokens_per_step: list[torch.Tensor] = field(default_factory=list)

    @property
    def mean_accepted_length(self) -> float:
        """Mean steps committed per forward over samples (AR: 1)."""
        forwards = torch.stack([(self.accept_step[b, :n].max() + 1) for b, n in enumerate(self.lengths.tolist())])
        return float((self.lengths.float() / forwards.float()).mean())

    def as_dict(self) -> dict[str, Any]:
        return {
            "nfe": self.nfe,
            "wall_s": self.wall_s,
            "lengths": self.lengths.tolist(),
            "mean_accepted_length": self.mean_accepted_length,
        }


@dataclass
class StreamOutput:
    tokens: torch.Tensor  # [B, N, K], valid up to stats.lengths
    stats: StreamStats


def accept_steps(
    rules: Sequence[AcceptanceRule],
    p: torch.Tensor,
    q: torch.Tensor,
    drafts: torch.Tensor,
    uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-stream verdicts merged per step.

    ``p`` ``[B, L+1, K, V]``, ``q`` ``[B, L, K, V]``, ``drafts`` ``[B, L, K]``, ``uniforms`` ``[B, K, L+1]``.
    ``rules`` holds one rule for all streams (folded into the batch) or one per stream (a rule with a per-stream
    nearby-token table). Returns the steps accepted ``[B]``, the token of each stream in the step after them
    ``[B, K]``, and whether that token is the stream's kept draft ``[B, K]``.
    """
    b, l, k = drafts.shape
    fold = lambda x: x.transpose(1, 2).reshape(b * k, *x.shape[1:2], *x.shape[3:])  # noqa: E731
    if len(rules) == 1:
        verdict = rules[0](
            fold(p), fold(q), fold(drafts), uniforms[..., :l].reshape(b * k, l), uniforms[..., l].reshape(-1)
        )
        accepted, resampled = verdict.accepted.view(b, k), verdict.next_token.view(b, k)
    else:  # one call per stream (K calls), each with its own table
        verdicts = [
            rule(p[:, :, s], q[:, :, s], drafts[:, :, s], uniforms[:, s, :l], uniforms[:, s, l])
            for s, rule in enumerate(rules)
        ]
        accepted = torch.stack([v.accepted for v in verdicts], 1)
        resampled = torch.stack([v.next_token for v in verdicts], 1)
    n = accepted.min(1).values
    kept = accepted > n[:, None]
    draft_at_n = drafts.gather(1, n.clamp(max=l - 1).view(b, 1, 1).expand(b, 1, k)).squeeze(1)
    return n, torch.where(kept, draft_at_n, resampled), kept


#: Jacobi inits of fresh frame slots; the last two read the model's ``p`` (not available to the depth layout).
FRAME_INITS = ("repeat", "random", "sample", "mix")
P_INITS = ("sample", "mix")


class FrameJacobiDrafter:
    """A Jacobi window of ``window`` steps x ``K`` streams (SJD along time, Teng et al. 2024).

    After a verification the window slides; steps the forward already saw are redrawn from their ``p`` (their
    ``q``), steps beyond are initialised: ``init="repeat"`` copies the last known frame (frame-repeat: speech
    frames change slowly), ``"random"`` draws uniform tokens (one-hot ``q`` either way). ``"sample"`` draws each
    codebook from the window's furthest ``p`` (the model's distribution for the step after the window; ``q`` is
    that ``p``), which suits codebooks whose tokens rarely repeat but whose distribution changes slowly (fine
    residual codebooks); ``"mix"`` draws from ``(copy of the last frame + that p) / 2`` per codebook, so a codebook
    that repeats (the coarse one) keeps half its copy mass. The first window, before any ``p``, copies.

    ``coupling="maximal"`` is MC-SJD (So et al. 2025) on every stream: a redraft keeps the token its step held in
    the previous window with probability ``min(1, p_new / q_old)``, else draws from the residual, so that it
    changes as rarely as any draw from ``p_new`` can (:func:`~mmaccel.drafting.coupling.maximal_coupling`).
    """

    def __init__(self, window: int = 8, init: str = "repeat", coupling: str = "none"):
        self.window = check_window(window)
        if init not in FRAME_INITS:
            raise ValueError(f"init must be one of {list(FRAME_INITS)}, got {init!r}")
        if coupling not in ("none", "maximal"):
            raise ValueError(f"coupling must be 'none' or 'maximal' for codec streams, got {coupling!r}")
        self.init, self.coupling = init, coupling
        self.p_last: torch.Tensor | None = None  # [B, K, V]: the furthest p of the last verification

    def _fresh(
        self, last: torch.Tensor, n: int, state: StreamState, p_last: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fresh steps ``[B, n, K]`` after frame ``last`` ``[B, K]`` and the ``q`` they were drawn from."""
        u = state.rng.uniform(n, last.shape[1])
        v = state.vocab_size
        if self.init == "random":
            tokens = (u * v).long().clamp_(max=v - 1)
            return tokens, one_hot(tokens, v)
        copy = last[:, None].expand(-1, n, -1)
        if self.init == "repeat" or p_last is None:
            return copy.clone(), one_hot(copy, v)
        q = p_last[:, None].expand(-1, n, -1, -1)
        if self.init == "mix":
            q = 0.5 * (q + one_hot(copy, v))
        return sample(q, u), q.clone()

    def begin(self, state: StreamState) -> None:
        self.p_last = None
        self.tokens, self.q = self._fresh(state.last_frame, self.window, state)

    def resize(self, state: StreamState, window: int) -> None:
        """A new window width (``window="auto"``): drafts beyond it are dropped, new slots initialised."""
        if window < self.window:
            self.tokens, self.q = self.tokens[:, :window], self.q[:, :window]
        elif window > self.window:
            fresh, q = self._fresh(self.tokens[:, -1], window - self.window, state, self.p_last)
            self.tokens = torch.cat([self.tokens, fresh], 1)
            self.q = torch.cat([self.q, q], 1)
        self.window = window

    def propose(self, state: StreamState) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens, self.q

    def update(self, state: StreamState, p: torch.Tensor, n: torch.Tensor) -> None:
        w, k, v = self.window, p.shape[2], p.shape[3]
        ar = torch.arange(w, device=p.device)
        rows = n[:, None] + 1 + ar
        seen = rows <= w
        p_rows = p.gather(1, rows.clamp(max=w).view(-1, w, 1, 1).expand(-1, -1, k, v))
        if self.coupling == "maximal":
            # rows below w held a draft of the same step in the window just verified
            u_draw, u_keep = state.rng.uniform(2, w, k).unbind(1)
            old_rows = rows.clamp(max=w - 1).view(-1, w, 1).expand(-1, -1, k)
            old = self.tokens.gather(1, old_rows)
            q_old = self.q.gather(1, old_rows[..., None].expand(-1, -1, -1, v))
            coupled = maximal_coupling(old, q_old, p_rows, u_keep, u_draw)
            refreshed = torch.where((rows < w)[..., None], coupled, sample(p_rows, u_draw))
        else:
            refreshed = sample(p_rows, state.rng.uniform(w, k))
        n_seen = seen.sum(1)
        # The frame before the first fresh slot: the last redrawn one, or the last committed frame.
        last_seen = refreshed.gather(1, (n_seen - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, k)).squeeze(1)
        last = torch.where((n_seen > 0)[:, None], last_seen, state.last_frame)
        self.p_last = p[:, w]  # the step after the window: what the model expects next, whatever was accepted
        fresh, fresh_q = self._fresh(last, w, state, self.p_last)
        self.tokens = torch.where(seen[..., None], refreshed, fresh)
        self.q = torch.where(seen[..., None, None], p_rows, fresh_q)

    def update_frames(self, state: StreamState, frames: torch.Tensor, n: torch.Tensor) -> None:
        """Slide the window given the model's own frames ``[B, L + 1, K]`` at the verified positions (the
        depth-transformer layout, where no per-codebook ``p`` exists): rows past the committed one are redrafted
        from them, the rest initialised; one-hot ``q`` throughout."""
        w, k = self.window, frames.shape[2]
        rows = n[:, None] + 1 + torch.arange(w, device=frames.device)
        seen = rows <= w
        redrawn = frames.gather(1, rows.clamp(max=w).view(-1, w, 1).expand(-1, -1, k))
        n_seen = seen.sum(1)
        last_seen = redrawn.gather(1, (n_seen - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, k)).squeeze(1)
        last = torch.where((n_seen > 0)[:, None], last_seen, state.last_frame)
        self.tokens = torch.where(seen[..., None], redrawn, self._fresh(last, w, state)[0])
        self.q = one_hot(self.tokens, state.vocab_size)


@dataclass
class StreamRun:
    """What both stream decoders (:class:`StreamDecoder`, the depth layout's) hold during one generation: the
    cache, the state, the acceptance records, the stats, the progress bar."""

    state: StreamState
    cache: Any
    stats: StreamStats
    accept_step: torch.Tensor
    from_draft: torch.Tensor
    slots: int
    start: float
    bar: Any

    @property
    def batch(self) -> int:
        return self.state.generated.shape[0]

    @property
    def k(self) -> int:
        return self.state.generated.shape[2]

    @property
    def device(self) -> torch.device:
        return self.state.generated.device

    @classmethod
    def open(
        cls, model: Any, prompt: Any, max_steps: int, seeds: Sequence[int] | None, window: int, progress: bool
    ) -> StreamRun:
        """Check ``max_steps`` and ``seeds``; a cache of the final length and an empty state (step 0 to fill)."""
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
        batch, k = prompt.batch_size, model.num_streams
        seeds = list(range(batch)) if seeds is None else list(seeds)
        if len(seeds) != batch:
            raise ValueError(f"seeds must hold one seed per sample ({batch}), got {len(seeds)}")
        device = model.device
        start = time.perf_counter()
        slots = max_steps + 2 * window + 2
        cache = model.new_cache(batch, int(prompt.lengths.max()) + slots)
        state = StreamState(
            SampleRNG(seeds, device),
            torch.zeros(batch, slots, k, dtype=torch.long, device=device),
            torch.ones(batch, dtype=torch.long, device=device),
            prompt.lengths.to(device).clone(),
            torch.zeros(batch, dtype=torch.bool, device=device),
            model.vocab_size,
        )
        accept_step = torch.zeros(batch, slots, dtype=torch.long, device=device)
        from_draft = torch.zeros(batch, slots, k, dtype=torch.bool, device=device)
        bar = tqdm(total=max_steps, disable=not progress, desc="frames", leave=False)
        return cls(state, cache, StreamStats(), accept_step, from_draft, slots, start, bar)

    def close(self, max_steps: int, lengths: torch.Tensor) -> StreamOutput:
        self.bar.close()
        stats = self.stats
        stats.lengths = lengths
        stats.accept_step = self.accept_step[:, :max_steps]
        stats.from_draft = self.from_draft[:, :max_steps]
        stats.wall_s = time.perf_counter() - self.start
        return StreamOutput(self.state.generated[:, :max_steps], stats)


@dataclass
class _Frontier:
    """The committed frontier as :func:`~mmaccel.window.measure_costs` reads it: each row's last frame."""

    last_token: torch.Tensor
    last_pos: torch.Tensor
    device: torch.device
    batch_size: int


class StreamDecoder:
    """Generates ``[B, N, K]`` step tokens from a :class:`StreamModel`, AR (``drafter=None``) or speculative with
    any acceptance rule; ``tables`` ``[K, V, D]`` (one nearby-token table per stream) for rules that read one.

    ``auto`` (:class:`~mmaccel.window.AutoWindow`) is ``window="auto"``: the verify cost of each window is
    measured on this model and batch, and the window follows the measured steps per forward (down to plain AR
    when no window pays), as the token engine does."""

    def __init__(
        self,
        model: StreamModel,
        drafter: FrameJacobiDrafter | None = None,
        rule: str = "exact",
        sampling: SamplingConfig | None = None,
        tables: torch.Tensor | None = None,
        auto: AutoWindow | None = None,
        **rule_params: Any,
    ):
        if auto is not None and drafter is None:
            raise ValueError("window='auto' needs a drafter")
        if auto is not None and getattr(drafter, "needs_hidden", False):
            raise ValueError("window='auto' does not apply to a drafter with one step per head (MCTP heads)")
        self.model, self.drafter, self.auto = model, drafter, auto
        self.sampling = sampling or SamplingConfig()
        if rule_class(rule).table is not None:
            if tables is None:
                raise ValueError(f"rule {rule!r} needs nearby-token tables (one per stream)")
            self.rules = [make_rule(rule, table, **rule_params) for table in tables]
        else:
            self.rules = [make_rule(rule, **rule_params)]

    def _pins(self, steps: torch.Tensor, known: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The slots ``[B, T, K]`` the layout fixes at ``steps`` and their tokens: the delay pattern's forced
        slots (token 0) and, for a model with ``pinned(steps, known)``, slots fixed by the known past (Dia forces
        EOS in codebook ``k`` ``delay_k`` steps after codebook 0's EOS)."""
        forced = self.model.forced(steps)
        tokens = torch.zeros(forced.shape, dtype=torch.long, device=steps.device)
        if known is not None:
            mask, value = self.model.pinned(steps, known)
            forced, tokens = forced | mask, torch.where(mask, value, tokens)
        return forced, tokens

    def _known(self, state: StreamState, drafts: torch.Tensor) -> torch.Tensor | None:
        """Committed steps with the window's drafts after them, -1 elsewhere (``None`` without ``pinned``)."""
        if getattr(self.model, "pinned", None) is None:
            return None
        slots, k = state.generated.shape[1:]
        index = torch.arange(slots, device=drafts.device)
        known = torch.where((index < state.count[:, None])[..., None], state.generated, -1)
        if drafts.shape[1]:
            at = (state.count[:, None] + index[: drafts.shape[1]]).clamp(max=slots - 1)
            known.scatter_(1, at[..., None].expand(-1, -1, k), drafts)
        return known

    def _probs(self, logits: torch.Tensor, steps: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        p = target_probs(logits, self.sampling)
        forced, tokens = self._pins(steps, known)
        return torch.where(forced[..., None], one_hot(tokens, p.shape[-1]), p)

    @torch.no_grad()
    def generate(
        self, prompt: Any, max_steps: int, seeds: Sequence[int] | None = None, progress: bool = False
    ) -> StreamOutput:
        drafter, auto = self.drafter, self.auto
        w = (auto.max_window if auto is not None else drafter.window) if drafter is not None else 0
        run = StreamRun.open(self.model, prompt, max_steps, seeds, w, progress)
        state, cache, stats, k, batch, device = run.state, run.cache, run.stats, run.k, run.batch, run.device
        accept_step, from_draft, rng, slots = run.accept_step, run.from_draft, state.rng, run.slots
        # A drafter reading hidden states (MCTP heads) gets them from the same forwards; others cost nothing extra.
        needs_hidden = bool(getattr(drafter, "needs_hidden", False))
        hidden_kw = {"output_hidden": True} if needs_hidden else {}
        prefill = self.model.prefill(prompt, cache, **hidden_kw)
        stats.nfe += 1
        zeros = torch.zeros(batch, 1, dtype=torch.long, device=device)
        p0 = self._probs(prefill.logits, zeros)[:, 0]
        state.generated[:, 0] = sample(p0, rng.uniform(k))
        stop = self.model.stop_token
        stop_at = torch.full((batch,), slots, dtype=torch.long, device=device)
        if auto is not None:
            costs = auto.costs
            if costs is None:
                frontier = _Frontier(state.last_frame, state.last_pos, device, batch)
                costs = measure_costs(self.model, cache, frontier, auto.windows)
            key = (model_key(self.model), str(device), batch, "streams", type(self.rules[0]).__name__)
            w = auto.begin(costs, key if auto.costs is None else None)
            drafter.window = max(w, 1)
        if drafter is not None:
            if needs_hidden:
                drafter.see(prefill.hidden[:, -1], self.sampling)
            drafter.begin(state)
        while True:
            if auto is not None and w == 0:
                drafter = None  # no window pays: plain AR to the end
            ar = torch.arange(w + 1, device=device)
            stop_at = self._stops(state, stop, stop_at)
            state.done |= (state.count >= max_steps) | (state.count >= stop_at + 1 + self.model.stop_lag)
            if bool(state.done.all()):
                break
            positions = state.last_pos[:, None] + ar
            steps = state.count[:, None] + ar
            if drafter is None:
                out = self.model.forward(state.last_frame[:, None], positions[:, :1], cache)
                p = self._probs(out.logits, steps[:, :1], self._known(state, state.generated[:, :0]))
                n = torch.zeros(batch, dtype=torch.long, device=device)
                nxt = sample(p[:, 0], rng.uniform(k))
                kept = torch.zeros(batch, k, dtype=torch.bool, device=device)
                drafts = nxt.new_zeros(batch, 0, k)
            else:
                drafts, q = drafter.propose(state)
                # draft i sits at step count + i, the step p[:, i] predicts
                forced, pins = self._pins(steps[:, :w], self._known(state, drafts))
                drafts = torch.where(forced, pins, drafts)
                q = torch.where(forced[..., None], one_hot(drafts, q.shape[-1]), q)
                out = self.model.forward(
                    torch.cat([state.last_frame[:, None], drafts], 1), positions, cache, **hidden_kw
                )
                p = self._probs(out.logits, steps, self._known(state, drafts))
                n, nxt, kept = accept_steps(self.rules, p, q, drafts, rng.uniform(k, w + 1))
            stats.nfe += 1
            committed = self._commit(state, drafts, n, nxt, kept, accept_step, from_draft, stats.nfe - 1)
            stats.tokens_per_step.append(committed)
            if drafter is not None:
                if needs_hidden:  # row n predicted the step just committed; the heads guess the ones after it
                    index = n.view(-1, 1, 1).expand(-1, 1, out.hidden.shape[-1])
                    drafter.see(out.hidden.gather(1, index).squeeze(1), self.sampling)
                drafter.update(state, p, n)
                if auto is not None:
                    auto.observe(w, n, ~state.done)
                    chosen = auto.choose(w)
                    if chosen != w and chosen > 0:
                        drafter.resize(state, chosen)
                    w = chosen
            run.bar.update(int(committed.max()))
        # A speculative step may commit past the stop's lag: those steps are dropped.
        return run.close(max_steps, state.count.clamp(max=max_steps).minimum(stop_at + 1 + self.model.stop_lag))

    @staticmethod
    def _stops(state: StreamState, stop: int | None, stop_at: torch.Tensor) -> torch.Tensor:
        """The first committed step whose stream 0 is the stop token (``slots`` when none yet)."""
        if stop is None:
            return stop_at
        slots = state.generated.shape[1]
        index = torch.arange(slots, device=state.count.device)
        hit = (state.generated[..., 0] == stop) & (index < state.count[:, None])
        return torch.where(hit, index, slots).min(1).values

    @staticmethod
    def _commit(state, drafts, n, nxt, kept, accept_step, from_draft, forward_index) -> torch.Tensor:
        """Write ``drafts[:n]`` then ``nxt`` after each running sample's committed steps."""
        b, _, k = state.generated.shape
        committed = torch.where(state.done, 0, n + 1)
        new = torch.cat([drafts, nxt[:, None]], 1)
        new = new.scatter(1, n.view(-1, 1, 1).expand(-1, 1, k), nxt[:, None])
        offsets = torch.arange(new.shape[1], device=new.device)
        drafted = (offsets[None] < n[:, None])[..., None].expand(-1, -1, k).clone()
        drafted.scatter_(1, n.view(-1, 1, 1).expand(-1, 1, k), kept[:, None])
        index = (state.count[:, None] + offsets).clamp(max=state.generated.shape[1] - 1)
        keep = offsets < committed[:, None]
        idx3 = index[..., None].expand(-1, -1, k)
        state.generated.scatter_(1, idx3, torch.where(keep[..., None], new, state.generated.gather(1, idx3)))
        from_draft.scatter_(1, idx3, torch.where(keep[..., None], drafted, from_draft.gather(1, idx3)))
        accept_step.scatter_(1, index, torch.where(keep, forward_index, accept_step.gather(1, index)))
        state.count += committed
        state.last_pos += committed
        return committed


__all__ = [
    "FRAME_INITS",
    "P_INITS",
    "FrameJacobiDrafter",
    "StreamDecoder",
    "StreamRun",
    "StreamModel",
    "StreamOutput",
    "StreamStats",
    "accept_steps",
]
