"""Jacobi-window drafting, as in Speculative Jacobi Decoding (Teng et al. 2024)."""

from __future__ import annotations

from typing import Protocol

import torch

from ..models.base import ModelOutput
from ..sampling import sample
from .base import Draft, check_window, one_hot
from .branch import TreeDrafter, branch_children
from .coupling import check_coupling, gumbel_max, gumbel_noise, maximal_coupling


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


class JacobiDrafter(TreeDrafter):
    """Keeps a window of ``window`` guesses for the tokens after the committed prefix.

    After each verification the window slides to the new prefix end. Positions that the verifying forward has
    already seen get a fresh sample from the target distribution ``p_new`` computed there (their ``q`` is that
    distribution, which SJD's criterion compares against at the next iteration); positions beyond it are
    initialised by ``init`` (random by default) with a one-hot ``q``.

    ``coupling`` says how a redraft relates to the token the same absolute position held before (the window
    slides, so the old token sits ``accepted + 1`` slots further along in the previous window):

    * ``"none"``: an independent draw from ``p_new`` (SJD, Teng et al. 2024).
    * ``"maximal"``: MC-SJD (So et al. 2025, "MC-SJD: Maximal Coupling Speculative Jacobi Decoding for
      Autoregressive Visual Generation Acceleration", arXiv 2510.24211): the old token ``x``, drawn from ``q_old``,
      is kept with probability ``min(1, p_new(x) / q_old(x))``, else the draft comes from
      ``norm(max(p_new - q_old, 0))`` (:func:`~mmaccel.drafting.coupling.maximal_coupling`). ``q_old`` is the
      ``q`` the old token was handed over with: the previous iteration's distribution at that position, or the
      one-hot ``q`` of an initialised token (kept with probability ``p_new(x)``). A position that the previous
      window did not hold (the bonus row's) is drawn independently. This is the official code's construction
      (junhyukso/SCD, ``lumina1/scheduler/jacobi_iteration_lumina_mgpt_SCDMC.py``: SJD's verification loop without
      its ``break``, so every draft after the first rejection gets the accept test against ``p_new`` and is kept
      or redrawn from the residual), with one deliberate difference: the official code hands a kept token over
      with its old ``q`` (``resampled_target_scores = draft_prob``), so the next verification tests it against
      ``q_old`` a second time, which is not lossless (for a one-hot ``q_old`` the token survives with
      probability ``p(x)**2``; ``tests/core/test_coupling_official.py`` detects it); here every redraft carries
      ``p_new``, its marginal. The official scripts draft 32 tokens per window on Lumina-mGPT (16 on
      Janus-Pro) from random initial tokens.
    * ``"gumbel"``: Gumbel-max sampling, ``argmax(log p_new + g)``, with noise ``g`` ``[V]`` drawn once per absolute
      position when it enters the window and reused for every redraft there (also discussed by the MC-SJD paper
      as an alternative coupling). Initialised tokens do not use the noise.

    Both couplings leave each draft's marginal exactly ``p_new`` given everything the next verification
    conditions on, so SJD's criterion (with ``q = p_new``) stays lossless; they only make consecutive drafts agree
    more often, so more of the window survives. All draws come from the samples' own generators.

    ``tree="2x1*31"`` drafts a static tree over the window instead (:class:`~mmaccel.tree.TreeShape`; the window is
    its depth). A Jacobi guess does not depend on the tokens before it, so every node at depth ``d`` gets the same
    children: the window's guess for that position first, with its ``q``, then ``k - 1`` more from that ``q``
    with the guess removed, by ``branch`` (``"top"``: the most likely, one-hot ``q``; ``"sample"``: draws without
    replacement, each with the renormalised rest as its ``q``), so the rules' tree verdict stays lossless. The next
    window follows the accepted path and, past it, first children: the chain the trunk of the tree is. (Our
    addition: the published Jacobi methods draft a chain, and LANTERN++'s static trees are drafted by EAGLE.)
    """

    per_sample = ("tokens", "q", "noise")

    def __init__(
        self,
        window: int = 16,
        init: WindowInit | None = None,
        coupling: str = "none",
        tree: str | None = None,
        branch: str = "top",
    ):
        self.set_shape(window, tree, branch, None)
        self.init = init
        self.coupling = check_coupling(coupling)

    def begin(self, state, prefill: ModelOutput) -> None:
        self._init = self.init or UniformInit(state.vocab_size)
        b, w = state.batch_size, self.window
        start = state.count.clone()
        index = start[:, None] + torch.arange(w, device=start.device)
        self.tokens = self._init(state.generated, index, state.rng.uniform(w)).to(state.device)
        self.q = one_hot(self.tokens, state.vocab_size)
        if self.coupling == "gumbel":
            self.noise = gumbel_noise(state.rng.uniform(w, state.vocab_size))
        assert self.tokens.shape == (b, w)

    def propose(self, state) -> Draft:
        if self.tree is None:
            return Draft(self.tokens, self.q)
        b, depth, vocab = self.q.shape
        widest = max(self.tree.branching)
        kids, kid_q = self.tokens[..., None], self.q[:, :, None]
        if widest > 1:
            rest = self.q.scatter(-1, self.tokens[..., None], 0.0)
            more, more_q = branch_children(rest, widest - 1, self.branch, state.rng)
            kids = torch.cat([kids, more.view(b, depth, widest - 1)], 2)
            kid_q = torch.cat([kid_q, more_q.view(b, depth, widest - 1, vocab)], 2)
        # Node n is child number rank(n) at its depth, whoever its parent is.
        pick = (self.tree.node_depth * widest + self.tree.sibling_rank).to(self.q.device)
        parents = self.tree.parents.to(self.q.device).expand(b, -1)
        return Draft(kids.flatten(1)[:, pick], kid_q.flatten(1, 2)[:, pick], parents)

    def resize(self, state, window: int) -> None:
        """Keep the first ``window`` guesses, or extend the window with newly initialised positions."""
        if self.tree is not None:
            return super().resize(state, window)  # which refuses: a tree has a fixed shape
        old, window = self.window, check_window(window)
        if window < old:
            self.tokens, self.q = self.tokens[:, :window], self.q[:, :window]
            if self.coupling == "gumbel":
                self.noise = self.noise[:, :window]
        elif window > old:
            extra = window - old
            offsets = torch.arange(old, device=state.device)
            context = state.generated.clone()
            context.scatter_(1, state.count[:, None] + offsets, self.tokens)
            index = (state.count + old)[:, None] + torch.arange(extra, device=state.device)
            fresh = self._init(context, index, state.rng.uniform(extra)).to(state.device)
            self.tokens = torch.cat([self.tokens, fresh], 1)
            self.q = torch.cat([self.q, one_hot(fresh, self.q.shape[-1])], 1)
            if self.coupling == "gumbel":
                self.noise = torch.cat([self.noise, gumbel_noise(state.rng.uniform(extra, self.q.shape[-1]))], 1)
        self.window = window

    def update(self, state, out: ModelOutput, p: torch.Tensor, accepted: torch.Tensor) -> None:
        w, vocab = self.window, p.shape[-1]
        ar = torch.arange(w, device=p.device)
        # New window slot k is old verify row j = accepted + 1 + k; rows up to w (the bonus row) exist, and rows
        # below w held a draft of the same absolute position.
        rows = accepted[:, None] + 1 + ar
        seen = rows <= w
        # Whole vocabulary rows copied by index (one index_select), not gathered element by element.
        flat = rows.clamp(max=w) + p.shape[1] * torch.arange(rows.shape[0], device=p.device)[:, None]
        p_rows = p.reshape(-1, vocab).index_select(0, flat.flatten()).view(*rows.shape, vocab)
        if self.coupling != "none":
            held = rows < w
            old_rows = rows.clamp(max=w - 1)
        # Two draws per step whatever the coupling (each costs a call per sample generator).
        if self.coupling == "maximal":
            u_draw, u_keep = state.rng.uniform(2, w).unbind(1)
            old = self.tokens.gather(1, old_rows)
            q_old = self.q.gather(1, old_rows[..., None].expand(-1, -1, vocab))
            coupled = maximal_coupling(old, q_old, p_rows, u_keep, u_draw)
            refreshed = torch.where(held, coupled, sample(p_rows, u_draw))
        elif self.coupling == "gumbel":
            fresh_noise = gumbel_noise(state.rng.uniform(w, vocab))
            kept_noise = self.noise.gather(1, old_rows[..., None].expand(-1, -1, vocab))
            self.noise = torch.where(held[..., None], kept_noise, fresh_noise)
            refreshed = gumbel_max(p_rows, self.noise)
        else:
            refreshed = sample(p_rows, state.rng.uniform(w))
        u_init = state.rng.uniform(w)
        n_seen = seen.sum(-1)
        context = state.generated.clone()
        context.scatter_(1, state.count[:, None] + ar, torch.where(seen, refreshed, 0))
        fresh_index = (state.count + n_seen)[:, None] + ar
        fresh = self._init(context, fresh_index, u_init).to(p.device)
        fresh = fresh.gather(1, (ar - n_seen[:, None]).clamp(min=0))
        self.tokens = torch.where(seen, refreshed, fresh)
        # p where seen, one-hot on the fresh token elsewhere: written in place rather than built as a one-hot
        # tensor and merged (two fewer whole-vocabulary temporaries).
        at_token = torch.where(seen, p_rows.gather(-1, self.tokens[..., None]).squeeze(-1), 1.0)
        self.q = p_rows.masked_fill(~seen[..., None], 0.0).scatter_(-1, self.tokens[..., None], at_token[..., None])
