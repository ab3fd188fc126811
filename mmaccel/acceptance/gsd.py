"""Grouped speculative decoding (So et al. 2025, "Grouped Speculative Decoding for Autoregressive Image
Generation")."""

from __future__ import annotations

import torch

from ..params import Range
from .base import AcceptanceRule, token_probs


def calibrated_d_thr(unit_embeddings: torch.Tensor, rank: int, sample: int = 1024) -> float:
    """Median over tokens of the squared distance to their ``rank``-th nearest other token (unit vectors).

    Estimated on ``sample`` evenly spaced rows against the whole table, so a 16k-entry table costs one
    ``sample x V`` product; a margin of 1e-6 keeps the ``rank``-th neighbour itself inside the strict ``<`` test.
    """
    vocab = unit_embeddings.shape[0]
    if vocab < 2:
        return 4.0
    rows = torch.linspace(0, vocab - 1, min(sample, vocab)).round().long().unique()
    sq_dist = (2 - 2 * unit_embeddings[rows] @ unit_embeddings.T).clamp_min(0)
    sq_dist[torch.arange(len(rows)), rows] = float("inf")  # a token is not its own neighbour
    kth = sq_dist.topk(min(rank, vocab - 1), dim=-1, largest=False).values[:, -1]
    return float(kth.median()) + 1e-6


class GSDRule(AcceptanceRule):
    """Accept a draft on the mass of its dynamic cluster rather than its own probability.

    Around draft ``x`` take the ``group`` tokens whose target probabilities are nearest ``p(x)`` (a contiguous
    block of the probability ranking, ``x`` included), and keep those with ``|p - p(x)| < p_thr`` and squared
    distance to ``x`` below ``d_thr`` between unit-normalised embeddings. With ``P`` and ``Q`` the cluster's mass
    under ``p`` and ``q``, accept if ``u < min(1, P / Q)``; on rejection draw from ``norm(max(p - q, 0))``.

    The acceptance probability is never below the exact rule's: a cluster member whose ``p/q`` ratio is lower than
    the draft's own would make ``P/Q`` smaller, so the test uses ``max(P/Q, p(x)/q(x))``. Defaults: ``group`` 10
    (our choice), ``p_thr`` 0.15.

    ``d_thr`` (squared distance between unit vectors, so in (0, 4]) says how near in embedding space a token must
    be to count as "the same" for the draft. A fixed value means different things for different tables: in a
    trained VQ codebook most codes have neighbours at cosine 0.98, in a small GPT's input embeddings the nearest
    neighbour of a typical token sits at cosine 0.65, and a fixed 0.5 (cosine 0.75) then leaves 95% of tokens
    alone in their cluster, which makes GSD the exact rule. ``d_thr=None`` (the default) therefore calibrates it
    to the table: the median, over tokens, of the squared distance to their ``group``-th nearest neighbour, so
    a typical token has about ``group`` embedding neighbours within reach (the probability filter and the
    ``group`` nearest in probability then pick among them).
    """

    name = "gsd"
    table = "embeddings"  # GSD clusters on the model's own embedding of tokens
    ranges = {
        "group": Range(1, None),  # and at most the vocabulary size
        "p_thr": Range(0, 1, low_open=True),
        "d_thr": Range(0, None, low_open=True),  # or None: calibrated to the table
    }
    notes = {"group": "at most the vocabulary size", "d_thr": "None: calibrated to the embedding table"}

    def __init__(self, embeddings: torch.Tensor, group: int = 10, p_thr: float = 0.15, d_thr: float | None = None):
        vocab = embeddings.shape[0]
        Range(1, vocab).check("group", group)
        self.ranges["p_thr"].check("p_thr", p_thr)
        if d_thr is not None:
            self.ranges["d_thr"].check("d_thr", d_thr, "gsd (None calibrates it to the embeddings)")
        self.embeddings = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
        self.group, self.p_thr = group, p_thr
        self.d_thr = d_thr if d_thr is not None else calibrated_d_thr(self.embeddings, group)
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
