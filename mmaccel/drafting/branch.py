"""How a tree drafter picks a node's children from its distribution, and the ``q`` each child then carries."""

from __future__ import annotations

import torch

from ..sampling import SampleRNG, sample
from .base import one_hot

#: ``"top"``: the ``k`` most likely tokens, deterministic, so each child's ``q`` is one-hot on it (EAGLE's and
#: LANTERN++'s static trees). ``"sample"``: ``k`` draws without replacement; child ``j``'s ``q`` is the drafter's
#: distribution with the earlier siblings removed and renormalised, the distribution it was drawn from.
BRANCHES = ("top", "sample")


def branch_children(q: torch.Tensor, k: int, branch: str, rng: SampleRNG) -> tuple[torch.Tensor, torch.Tensor]:
    """Children of ``n`` nodes with distributions ``q`` ``[B, n, V]``: tokens ``[B, n * k]`` (parent-major, in the
    order a rule tries them) and their ``q`` ``[B, n * k, V]``. Loops over the ``k`` siblings only."""
    b, n, vocab = q.shape
    if branch == "top":
        tokens = q.topk(k, -1).indices  # [B, n, k], most likely first
        return tokens.flatten(1), one_hot(tokens.flatten(1), vocab)
    uniforms = rng.uniform(n, k)
    rest, tokens, qs = q.clone(), [], []
    for j in range(k):
        mass = rest.sum(-1, keepdim=True)
        # Fewer than k tokens with mass left: the child is then a deterministic pick, whose q is one-hot.
        token = torch.where(mass[..., 0] > 0, sample(rest, uniforms[..., j]), rest.argmax(-1))
        q_j = torch.where(mass > 0, rest / mass.clamp_min(1e-30), one_hot(token, vocab))
        tokens.append(token)
        qs.append(q_j)
        rest = rest.scatter(-1, token[..., None], 0.0)
    return torch.stack(tokens, 2).flatten(1), torch.stack(qs, 2).flatten(1, 2)
