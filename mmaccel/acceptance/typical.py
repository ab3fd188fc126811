"""Typical acceptance (Cai et al. 2024, "Medusa: Simple LLM Inference Acceleration Framework with Multiple
Decoding Heads")."""

from __future__ import annotations

import torch

from ..params import Range
from .base import AcceptanceRule, plain_sample, token_probs


class TypicalRule(AcceptanceRule):
    """Accept draft ``x`` when ``p(x) > min(epsilon, alpha * exp(-H(p)))``: plausible tokens pass, more easily
    where the target is uncertain. Not lossless; at temperature 0 it reduces to greedy matching.

    Medusa's defaults: ``epsilon`` (posterior threshold) 0.09 and ``alpha`` 0.3. The step ends with a token drawn
    from ``p`` at the first failure (or the bonus position).
    """

    name = "typical"
    residual = False
    ranges = {"epsilon": Range(0, 1, low_open=True), "alpha": Range(0, None, low_open=True)}

    def __init__(self, epsilon: float = 0.09, alpha: float = 0.3):
        self.epsilon = self.ranges["epsilon"].check("epsilon", epsilon)
        self.alpha = self.ranges["alpha"].check("alpha", alpha)

    def accept(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u_accept: torch.Tensor):
        entropy = -(p * p.clamp_min(1e-30).log()).sum(-1)
        threshold = torch.minimum(torch.full_like(entropy, self.epsilon), self.alpha * torch.exp(-entropy))
        return token_probs(p, drafts) > threshold

    def next_token(self, p: torch.Tensor, q: torch.Tensor, accepted: torch.Tensor, u_sample: torch.Tensor):
        return plain_sample(p, accepted, u_sample)
