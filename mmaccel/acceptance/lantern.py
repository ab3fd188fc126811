"""LANTERN relaxed acceptance (Jang et al. 2025, "LANTERN: Accelerating Visual Autoregressive Models with
Relaxed Speculative Decoding"; LANTERN++, Park et al. 2025, for the multiplicative bound)."""

from __future__ import annotations

from typing import Any

import torch

from ..params import Range
from .base import AcceptanceRule, token_probs
from .neighbours import cached_neighbours, nearest_neighbours


def default_k(vocab: int) -> int:
    """LANTERN's k = 1000 is about 6% of a 16384-entry codebook; other codebooks keep that share."""
    return max(1, min(1000, round(1000 * vocab / 16384), vocab - 1))


class LanternRule(AcceptanceRule):
    """Latent-proximity relaxation: a draft ``x`` also collects the probability of its nearest neighbours.

    The ``k`` tokens nearest to ``x`` in the embedding space (precomputed once, sorted) give cumulative masses
    ``S_j = sum_{i<=j} p(n_i)`` (``k`` defaults to 1000 for a 16384-entry codebook, the same share of other
    sizes: :func:`default_k`). The additive mode
    (``delta`` in (0, 1]) takes the largest ``m`` with
    ``S_m <= delta``; the multiplicative LANTERN++ mode (``lam > 1``) the largest ``m`` with
    ``S_m <= (lam - 1) * p(x)``. Then ``p~(x) = p(x) + S_m`` and ``x`` is accepted if ``u < p~(x) / q(x)``.
    ``p~`` moves at most ``S_m`` of mass, so its total-variation distance to ``p`` is at most ``delta``
    (see :meth:`relaxed_probs`). On rejection the step ends with a draw from ``norm(max(p - q, 0))``.
    """

    name = "lantern"
    table = "codebook"  # latent proximity: the space the tokens decode from
    ranges = {"k": Range(1, None), "delta": Range(0, 1, low_open=True), "lam": Range(1, None, low_open=True)}
    notes = {
        "k": "None: 1000 per 16384 codebook entries; below the vocabulary size",
        "lam": "set: LANTERN++'s bound instead of delta",
    }

    def __init__(
        self,
        embeddings: torch.Tensor,
        k: int | None = None,
        delta: float | None = 0.1,
        lam: float | None = None,
        neighbours: torch.Tensor | None = None,
    ):
        if lam is not None:
            self.ranges["lam"].check("lam", lam)
            delta = None
        else:
            self.ranges["delta"].check("delta", delta)
        vocab = embeddings.shape[0]
        k = default_k(vocab) if k is None else k
        if not 1 <= k < vocab:
            raise ValueError(f"k must be in [1, vocabulary size {vocab}), got {k}")
        if neighbours is not None and (neighbours.shape[0] != vocab or neighbours.shape[1] < k):
            raise ValueError(f"neighbours must be a [{vocab}, >= k={k}] table, got shape {tuple(neighbours.shape)}")
        self.k, self.delta, self.lam = k, delta, lam
        self.neighbours = nearest_neighbours(embeddings, k) if neighbours is None else neighbours[:, :k]
        self.vocab_size = vocab

    @classmethod
    def build(cls, table: torch.Tensor | None = None, cache_dir: Any = None, **params: Any) -> LanternRule:
        """The rule over ``table``'s neighbour lists, computed once per codebook and kept in ``cache_dir`` (with
        ``cache_dir=None``, computed here and kept nowhere)."""
        if table is not None and cache_dir is not None and params.get("neighbours") is None:
            k = params.get("k")
            k = default_k(table.shape[0]) if k is None else k
            if isinstance(k, int) and 1 <= k < table.shape[0]:  # a bad k is reported by __init__
                params = {**params, "k": k, "neighbours": cached_neighbours(table, k, cache_dir)}
        return super().build(table, cache_dir, **params)

    def _bound(self, p_x: torch.Tensor) -> torch.Tensor:
        if self.lam is not None:
            return (self.lam - 1) * p_x
        return torch.full_like(p_x, self.delta)

    def _neighbour_mass(self, p: torch.Tensor, drafts: torch.Tensor):
        """Neighbour ids ``[..., k]``, how many are absorbed ``m``, and the absorbed mass ``S_m``."""
        nbrs = self.neighbours.to(drafts.device)[drafts].long()
        cumulative = p.gather(-1, nbrs).cumsum(-1)
        p_x = token_probs(p, drafts)
        m = (cumulative <= self._bound(p_x).unsqueeze(-1)).sum(-1)  # S is non-decreasing, so this is argmax m
        absorbed = cumulative.gather(-1, (m - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1) * (m > 0)
        return nbrs, m, absorbed

    def relaxed_probs(self, p: torch.Tensor, drafts: torch.Tensor) -> torch.Tensor:
        """The relaxed distribution ``p~`` for each draft: its ``m`` absorbed neighbours' mass moved onto it."""
        nbrs, m, absorbed = self._neighbour_mass(p, drafts)
        taken = torch.arange(self.k, device=p.device) < m.unsqueeze(-1)
        relaxed = p.scatter(-1, nbrs, p.gather(-1, nbrs) * ~taken)
        return relaxed.scatter_add(-1, drafts.unsqueeze(-1), absorbed.unsqueeze(-1))

    def accept(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u_accept: torch.Tensor):
        _, _, absorbed = self._neighbour_mass(p, drafts)
        return u_accept * token_probs(q, drafts) < token_probs(p, drafts) + absorbed


class LanternPlusPlusRule(LanternRule):
    """LANTERN++'s multiplicative bound (Park et al. 2025): the absorbed mass is at most ``(lam - 1) * p(x)``,
    ``lam`` 2 by default, so a draft's probability is relaxed by at most a factor ``lam``.

    The acceptance test is the official code's (jadohu/LANTERN, ``evaluate_posterior``: ``--lantern_delta``
    above 1 is ``lam``, and the neighbour lists exclude the token itself). Its residual after a rejection
    differs: when the draft absorbed any neighbour, the official code zeroes the drafter's ``q`` on the draft's
    ``k + 1`` nearest codes before ``max(p - q, 0)``, which moves extra mass onto the neighbours of a rejected
    draft; here the residual is ``max(p - q, 0)`` with the drafter's ``q`` as it is. The official scripts set
    ``lam`` per run (5 to 20, with ``k`` 5 or 10, over EAGLE trees) rather than by a default."""

    name = "lantern++"

    def __init__(
        self, embeddings: torch.Tensor, k: int | None = None, lam: float = 2.0, neighbours: torch.Tensor | None = None
    ):
        super().__init__(embeddings, k=k, delta=None, lam=lam, neighbours=neighbours)
