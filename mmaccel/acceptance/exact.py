"""Exact speculative sampling (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
Decoding"; Chen et al. 2023, "Accelerating Large Language Model Decoding with Speculative Sampling")."""

from __future__ import annotations

import torch

from .base import AcceptanceRule, token_probs


class ExactRule(AcceptanceRule):
    """Accept draft ``x`` with probability ``min(1, p(x) / q(x))``; on rejection draw from ``norm(max(p - q, 0))``;
    a bonus token from ``p`` when every draft is accepted. The output is distributed exactly as AR sampling."""

    name = "exact"
    lossless = True

    def accept(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u_accept: torch.Tensor):
        # u < p/q written as u * q < p: no division, and q(x) = 0 (a draft q could not produce) never accepts
        # unless p(x) > 0 too.
        return u_accept * token_probs(q, drafts) < token_probs(p, drafts)
