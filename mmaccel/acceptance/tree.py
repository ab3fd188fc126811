"""Any acceptance rule over a token tree: walk down from the root, trying each node's children in order.

At a node, the children are tested one after another against the current target distribution ``p_cur`` (at
first the target's ``p`` at that node). The first child that passes becomes the new node (``p_cur`` becomes the
target's ``p`` there); a child that fails updates ``p_cur`` by the rule's rejection (for the exact rule and the
rules that keep its residual: ``p_cur <- norm(max(p_cur - q_child, 0))``) and the next sibling is tried. When
no child passes (or the node is a leaf), the step ends with a token drawn from ``p_cur``.

With the exact rule this is multi-candidate speculative sampling by recursive rejection (SpecInfer, Miao et al.
2024; EAGLE, Li et al. 2024). It follows the official EAGLE code, ``evaluate_posterior`` in
``eagle/model/utils.py`` (github.com/SafeAILab/EAGLE): siblings in order, accept if ``r <= p(x) / q(x)``, on
rejection ``gtp = norm(max(gtp - q, 0))`` where ``q`` is the distribution the sibling was drawn from with the
earlier siblings' tokens removed and renormalised, and the final token drawn from the updated ``gtp`` when a
rejection happened. It is lossless when each child's ``q`` is the distribution it was drawn from given its
earlier siblings: a deterministic child (top-k) has a one-hot ``q`` (EAGLE's ``qx = 1``), a child sampled without
replacement the renormalised rest of the drafter's distribution. The relaxed rules (LANTERN, LANTERN++,
typical, GSD) run their own per-node test in place of the exact one; greedy takes the child equal to the
target's argmax, so it follows the longest path that matches greedy decoding.

A chain (one child per node) reduces to the rule's chain verdict with the same uniforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..tree import children_of
from .base import AcceptanceRule, Verdict


@dataclass
class TreeVerdict(Verdict):
    """A tree's verdict: ``accepted`` nodes along ``path`` ``[B, D]`` (drafted-node indices, ``-1`` past the
    accepted ones) and the ``next_token`` that follows them. ``trail`` ``[B, D]`` is the path continued below its
    last node along first children (``-1`` past a leaf): where a Jacobi window's next guesses come from."""

    path: torch.Tensor
    trail: torch.Tensor


def verify_tree(
    rule: AcceptanceRule,
    p: torch.Tensor,
    q: torch.Tensor,
    tokens: torch.Tensor,
    parents: torch.Tensor,
    depth: int,
    u_accept: torch.Tensor,
    u_sample: torch.Tensor,
) -> TreeVerdict:
    """``p`` ``[B, N+1, V]`` (row 0 at the root, row ``n + 1`` at drafted node ``n``), the nodes' ``q`` ``[B, N, V]``,
    ``tokens`` and ``parents`` ``[B, N]``, the tree's ``depth``, one uniform per node ``u_accept`` ``[B, N]`` and
    ``u_sample`` ``[B]``. Loops over depth and sibling rank only; every step is batched."""
    children = children_of(parents)  # [B, N+1, K]
    batch = torch.arange(p.shape[0], device=p.device)
    node = torch.zeros_like(u_sample, dtype=torch.long)  # tree index of the deepest accepted node
    p_cur = p[:, 0]  # unnormalised after a rejection, as the chain's residual is, so a chain draws the same token
    mass = torch.ones_like(p_cur[:, :1])  # p's rows are distributions; a residual carries its own mass
    going = torch.ones_like(node, dtype=torch.bool)
    path = torch.full((p.shape[0], depth), -1, dtype=torch.long, device=p.device)
    trail, tip, alive = torch.full_like(path, -1), node.clone(), torch.ones_like(going)
    for d in range(depth):
        kids = children[batch, node]  # [B, K]
        took = torch.zeros_like(going)
        for j in range(kids.shape[1]):
            kid = kids[:, j].clamp(min=0)
            tried = going & ~took & (kids[:, j] >= 0)
            q_kid = q[batch, kid]
            x, u = tokens[batch, kid, None], u_accept[batch, kid, None]
            ok = rule.accept((p_cur / mass)[:, None], q_kid[:, None], x, u)[:, 0] & tried
            rejected = tried & ~ok
            if rule.residual:
                residual = (p_cur / mass - q_kid).clamp_(min=0)
                # p_cur <= q leaves no residual mass; rejection then has probability 0, so keeping p_cur is exact.
                left = residual.sum(-1, keepdim=True)
                renew = rejected[:, None] & (left > 0)
                p_cur, mass = torch.where(renew, residual, p_cur), torch.where(renew, left, mass)
            p_cur = torch.where(ok[:, None], p[batch, kid + 1], p_cur)
            mass = torch.where(ok[:, None], 1.0, mass)
            node = torch.where(ok, kid + 1, node)
            path[:, d] = torch.where(ok, kid, path[:, d])
            took |= ok
        going &= took
        below = torch.where(going, path[:, d], children[batch, tip, 0])
        trail[:, d] = torch.where(alive, below, -1)
        alive = trail[:, d] >= 0
        tip = torch.where(alive, trail[:, d] + 1, tip)
    accepted = (path >= 0).sum(-1)
    return TreeVerdict(accepted, rule.final_token(p_cur, u_sample), path, trail)


def path_columns(verdict: TreeVerdict) -> torch.Tensor:
    """``[B, D+1]`` forward columns of the root and the accepted path, continued along the trail (then padded
    with the root): the rows a chain step would have had, drafts past the accepted ones included."""
    return torch.cat([torch.zeros_like(verdict.trail[:, :1]), verdict.trail + 1], 1).clamp(min=0)
