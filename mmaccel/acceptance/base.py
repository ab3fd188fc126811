"""Shared pieces of the acceptance rules.

A rule sees, for a batch of B samples and a window of L drafts:
``p`` ``[B, L+1, V]`` target distributions (row ``i`` verifies draft ``i``; row ``L`` is the bonus position),
``q`` ``[B, L, V]`` the distributions the drafts were drawn from, ``drafts`` ``[B, L]``, and per-sample uniforms:
``u_accept`` ``[B, L]`` for the accept tests and ``u_sample`` ``[B]`` for the token that ends the step.
It returns how many drafts each sample accepts and that final token. Rules are pure tensor functions: no model
calls and no Python loops over the vocabulary or the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..params import Range
from ..sampling import sample


@dataclass
class Verdict:
    """Per sample: ``accepted`` drafts (a prefix of the window) and the ``next_token`` that follows them."""

    accepted: torch.Tensor  # [B] long
    next_token: torch.Tensor  # [B] long


class AcceptanceRule:
    """Base class. Subclasses implement :meth:`accept`; most keep the residual resampling defined here."""

    name: ClassVar[str] = ""
    #: True when the output distribution equals plain AR sampling from ``p``.
    lossless: ClassVar[bool] = False
    #: The "nearby token" table the rule reads, or None: ``"codebook"`` (the latent space tokens decode from, e.g.
    #: a VQ codebook: LANTERN's latent proximity) or ``"embeddings"`` (the model's own input embeddings: GSD).
    #: A modality hands over the table of this kind; nothing outside this package names a rule to decide.
    table: ClassVar[str | None] = None
    #: The numeric range of each parameter: checked by the rule and shown in help texts.
    ranges: ClassVar[dict[str, Range]] = {}
    #: What a parameter's special values mean, for help texts (``{"k": "None: ..."}``).
    notes: ClassVar[dict[str, str]] = {}
    #: True when a rejected draft leaves the residual ``norm(max(p - q, 0))`` to draw from (or, in a tree, to
    #: test the next sibling against); False when the step ends with a draw from ``p`` itself.
    residual: ClassVar[bool] = True

    @classmethod
    def build(cls, table: torch.Tensor | None = None, cache_dir: Any = None, **params: Any) -> AcceptanceRule:
        """The rule with its ``table`` (``[V, D]``, required when :attr:`table` is set) and ``params``.

        ``cache_dir`` is where a rule may keep what it derives from the table (LANTERN's neighbour lists).
        """
        if cls.table is None:
            return cls(**params)
        if table is None:
            raise ValueError(f"rule {cls.name!r} needs a {cls.table} table (embeddings=...)")
        return cls(table, **params)

    def accept(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u_accept: torch.Tensor):
        """Boolean ``[B, L]``: whether each draft passes its own test (only the prefix up to a failure counts)."""
        raise NotImplementedError

    def next_token(self, p: torch.Tensor, q: torch.Tensor, accepted: torch.Tensor, u_sample: torch.Tensor):
        return residual_sample(p, q, accepted, u_sample)

    def final_token(self, p_cur: torch.Tensor, u_sample: torch.Tensor) -> torch.Tensor:
        """The token that ends a tree step, from the distribution ``p_cur`` ``[B, V]`` left where the walk
        stopped (unnormalised residual or the target's ``p``): see :mod:`mmaccel.acceptance.tree`."""
        return sample(p_cur, u_sample)

    def __call__(
        self,
        p: torch.Tensor,
        q: torch.Tensor,
        drafts: torch.Tensor,
        u_accept: torch.Tensor,
        u_sample: torch.Tensor,
    ) -> Verdict:
        accepted = accepted_prefix(self.accept(p[:, :-1], q, drafts, u_accept))
        return Verdict(accepted, self.next_token(p, q, accepted, u_sample))


def token_probs(probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``probs[..., tokens]`` for a token per row: ``[B, L, V]`` and ``[B, L]`` give ``[B, L]``."""
    return probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def accepted_prefix(accept: torch.Tensor) -> torch.Tensor:
    """Length of the leading run of ``True`` in each row of ``[B, L]``."""
    return accept.long().cumprod(-1).sum(-1)


def rows_at(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b]]`` for ``x`` of shape ``[B, T, ...]``."""
    # Advanced indexing copies whole rows: a third of the time of a gather over an index expanded to [B, 1, V].
    return x[torch.arange(x.shape[0], device=x.device), index]


def residual_sample(p: torch.Tensor, q: torch.Tensor, accepted: torch.Tensor, u_sample: torch.Tensor):
    """Token after the accepted prefix: from ``norm(max(p - q, 0))`` at the first rejection, or the bonus ``p``.

    This is the correction that makes speculative sampling exact (Leviathan et al. 2023; Chen et al. 2023).
    """
    window = q.shape[1]
    p_next = rows_at(p, accepted)
    q_next = rows_at(q, accepted.clamp(max=window - 1)) * (accepted < window).unsqueeze(-1)
    residual = (p_next - q_next).clamp_(min=0)
    # p == q leaves no residual mass; rejection then has probability 0, so falling back to p is exact.
    empty = residual.sum(-1, keepdim=True) <= 0
    return sample(torch.where(empty, p_next, residual), u_sample)


def plain_sample(p: torch.Tensor, accepted: torch.Tensor, u_sample: torch.Tensor) -> torch.Tensor:
    """Token after the accepted prefix drawn from ``p`` itself (rules without a residual correction)."""
    return sample(rows_at(p, accepted), u_sample)
