"""Greedy verification: a draft survives when it is the target's argmax."""

from __future__ import annotations

import torch

from .base import AcceptanceRule, rows_at


class GreedyRule(AcceptanceRule):
    """Accept drafts equal to ``argmax p``; the step ends with the argmax at the first mismatch (or the bonus).

    Token-identical to greedy AR decoding; at temperature 0 (one-hot ``p``) it is lossless.
    """

    name = "greedy"
    lossless = True  # against greedy decoding, the only setting in which it is used for claims
    residual = False

    def accept(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u_accept: torch.Tensor):
        return drafts == p.argmax(-1)

    def next_token(self, p: torch.Tensor, q: torch.Tensor, accepted: torch.Tensor, u_sample: torch.Tensor):
        return rows_at(p, accepted).argmax(-1)

    def final_token(self, p_cur: torch.Tensor, u_sample: torch.Tensor) -> torch.Tensor:
        return p_cur.argmax(-1)
