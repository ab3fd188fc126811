"""Grouped speculative decoding (So et al. 2025, "Grouped Speculative Decoding for Autoregressive Image
Generation")."""

from __future__ import annotations

import torch

from .base import AcceptanceRule, token_probs


class GSDRule(AcceptanceRule):
    """Accept a draft on the mass of its dynamic cluster rather than its own probability.

    Around draft ``x`` take the ``group`` tokens whose target probabilities are nearest ``p(x)`` (a contiguous
    block of the probability ranking, ``x`` included), and keep those with ``|p - p(x)| < p_thr`` and squared
    distance to ``x`` below ``d_thr`` between unit-normalised embeddings. With ``P`` and ``Q`` the cluster's mass
    under ``p`` and ``q``, accept if ``u < min(1, P / Q)``; on rejection draw from ``norm(max(p - q, 0))``.

    The acceptance probability is never below the exact rule's: a cluster member whose ``p/q`` ratio is lower than
    the draft's own would make ``P/Q`` smaller, so the test uses ``max(P/Q, p(x)/q(x))``. Defaults: ``group`` 10
    (our choice), ``p_thr`` 0.15, ``d_thr`` 0.5.
    """

    name = "gsd"
    needs_embeddings = True

    def __init__(self, embeddings: torch.Tensor, group: int = 10, p_thr: float = 0.15, d_thr: float = 0.5):
        vocab = embeddings.shape[0]
        if not 1 <= group <= vocab:
            raise ValueError(f"group must be in [1, {vocab}], got {group}")
        if not 0 < p_thr <= 1:
            raise ValueError(f"p_thr must be in (0, 1], got {p_thr}")
        if d_thr <= 0:
            raise ValueError(f"d_thr must be > 0, got {d_thr}")
        self.group, self.p_thr, self.d_thr = group, p_thr, d_thr
        self.embeddings = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
        self.vocab_size = vocab

    def cluster(self, p: torch.Tensor, drafts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate ids ``[B, L, group]`` and which of them form the draft's cluster."""
        p_x = token_probs(p, drafts)
        candidates = (p - p_x.unsqueeze(-1)).abs().topk(self.group, dim=-1, largest=False).indices
        emb = self.embeddings.to(p.device)
        sq_dist = (emb[candidates] - emb[drafts].unsqueeze(-2)).pow(2).sum(-1)
        close_p = (p.gather(-1, candidates) - p_x.unsqueeze(-1)).abs() < self.p_thr
        member = (close_p & (sq_dist < self.d_thr)) | (candidates == drafts.unsqueeze(-1))
        return candidates, member

    def accept_probability(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor) -> torch.Tensor:
        candidates, member = self.cluster(p, drafts)
        mass_p = (p.gather(-1, candidates) * member).sum(-1)
        mass_q = (q.gather(-1, candidates) * member).sum(-1)
        grouped = mass_p / mass_q.clamp_min(1e-30)
        own = token_probs(p, drafts) / token_probs(q, drafts).clamp_min(1e-30)
        return torch.maximum(grouped, own).clamp(max=1.0)

    def accept(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u_accept: torch.Tensor):
        return u_accept < self.accept_probability(p, q, drafts)
