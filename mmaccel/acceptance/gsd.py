"""Grouped speculative decoding (So et al. 2025, "Grouped Speculative Decoding for Autoregressive Image
Generation")."""

from __future__ import annotations

import torch

from ..params import Range
from .base import AcceptanceRule, token_probs
from .gsd_official import D_THR, official_accept_probability

VARIANTS = ("mmaccel", "official")


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

    By default (``variant="mmaccel"``), around draft ``x`` take the ``group`` tokens whose target probabilities
    are nearest ``p(x)`` (a contiguous block of the probability ranking, ``x`` included), and keep those with
    ``|p - p(x)| < p_thr`` and squared distance to ``x`` below ``d_thr`` between unit-normalised embeddings. With
    ``P`` and ``Q`` the cluster's mass under ``p`` and ``q``, accept if ``u < min(1, P / Q)``; on rejection draw
    from ``norm(max(p - q, 0))``.

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

    ``variant`` chooses between this rule (``"mmaccel"``, the default: what ``gsd`` has always computed) and the
    authors' code (``"official"``: github.com/junhyukso/GSD, ``SpeculativeSampler`` in
    ``scheduler/jacobi_iteration_lumina_mgpt.py``; see :mod:`mmaccel.acceptance.gsd_official`), which differs in
    three ways:

    * distance: squared L2 between the *raw* embedding rows, ``d_thr`` 0.5 by default (``d_thr=None`` means 0.5
      there: the official constant, not a calibration), where ``"mmaccel"`` normalises rows to unit length;
    * group: the window of ranks ``k-7 .. k+6`` in ascending order of target probability (logit) around the
      draft's rank ``k`` (cut at the top: for ``k > V-7`` it is ``k-7 .. V-1``, 8 tokens for the argmax), where
      ``"mmaccel"`` takes the ``group`` tokens nearest in ``|p - p(x)|``; ``group`` is unused there and must
      stay 10;
    * ratio: ``min(1, P/Q)`` alone, where ``"mmaccel"`` floors it at ``p(x)/q(x)``.

    At ranks ``k < 7`` (the seven least likely tokens) the official slice ``order[k-7 : k+7]`` starts at the
    negative index ``k - 7``, i.e. ``V + k - 7``, past its stop ``k + 7``: the window is empty (for ``V >= 14``),
    the code's ``try`` fails and its ``except`` applies the exact rule ``min(1, p(x)/q(x))``; the official variant
    does the same. ``p_thr`` (0.15) and the residual draw on rejection are the same in both variants.
    """

    name = "gsd"
    table = "embeddings"  # GSD clusters on the model's own embedding of tokens
    ranges = {
        "group": Range(1, None),  # and at most the vocabulary size
        "p_thr": Range(0, 1, low_open=True),
        "d_thr": Range(0, None, low_open=True),  # or None: calibrated to the table
    }
    notes = {
        "group": "at most the vocabulary size; unused by variant=official",
        "d_thr": "None: calibrated to the embedding table; variant=official: None is the official 0.5",
        "variant": "mmaccel (this rule) or official (the authors' code)",
    }

    def __init__(
        self,
        embeddings: torch.Tensor,
        group: int = 10,
        p_thr: float = 0.15,
        d_thr: float | None = None,
        variant: str = "mmaccel",
    ):
        if variant not in VARIANTS:
            raise ValueError(f"variant of gsd must be one of {', '.join(VARIANTS)}, got {variant!r}")
        vocab = embeddings.shape[0]
        if variant == "official":
            if group != 10:
                raise ValueError(
                    f"group of gsd is unused by variant='official' (its group is the ranks k-7 .. k+6 around the "
                    f"draft); leave it at 10, got {group!r}"
                )
        else:
            Range(1, vocab).check("group", group)
        self.ranges["p_thr"].check("p_thr", p_thr)
        if d_thr is not None:
            self.ranges["d_thr"].check("d_thr", d_thr, "gsd (None calibrates it to the embeddings)")
        self.variant, self.group, self.p_thr, self.vocab_size = variant, group, p_thr, vocab
        if variant == "official":
            self.embeddings = embeddings.detach().float()  # raw rows: the official distance is not normalised
            self.sq_norms = self.embeddings.pow(2).sum(-1)
            self.d_thr = d_thr if d_thr is not None else D_THR
        else:
            self.embeddings = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
            self.d_thr = d_thr if d_thr is not None else calibrated_d_thr(self.embeddings, group)

    def cluster(self, p: torch.Tensor, drafts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate ids ``[B, L, group]`` and which of them form the draft's cluster (``variant="mmaccel"``)."""
        p_x = token_probs(p, drafts)
        candidates = (p - p_x.unsqueeze(-1)).abs().topk(self.group, dim=-1, largest=False).indices
        emb = self.embeddings.to(p.device)
        sq_dist = (emb[candidates] - emb[drafts].unsqueeze(-2)).pow(2).sum(-1)
        close_p = (p.gather(-1, candidates) - p_x.unsqueeze(-1)).abs() < self.p_thr
        member = (close_p & (sq_dist < self.d_thr)) | (candidates == drafts.unsqueeze(-1))
        return candidates, member

    def accept_probability(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor) -> torch.Tensor:
        if self.variant == "official":
            return official_accept_probability(p, q, drafts, self.embeddings, self.sq_norms, self.p_thr, self.d_thr)
        candidates, member = self.cluster(p, drafts)
        mass_p = (p.gather(-1, candidates) * member).sum(-1)
        mass_q = (q.gather(-1, candidates) * member).sum(-1)
        grouped = mass_p / mass_q.clamp_min(1e-30)
        own = token_probs(p, drafts) / token_probs(q, drafts).clamp_min(1e-30)
        return torch.maximum(grouped, own).clamp(max=1.0)

    def accept(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u_accept: torch.Tensor):
        return u_accept < self.accept_probability(p, q, drafts)
