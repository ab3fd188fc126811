"""A dynamic draft tree grown by the drafter's own confidence under a node budget (EAGLE-2, Li et al. 2024,
"EAGLE-2: Faster Inference of Language Models with Dynamic Draft Trees").

Expansion: at depth ``d`` the ``k_d`` candidates of the previous depth with the highest path confidence (the
product of the draft probabilities from the root) are forwarded and each gets its ``k_d`` most likely children
(the first depth: the root's ``k_1`` children). Reranking: of all candidates, the ``budget`` with the highest path
confidence form the tree. A child's confidence never exceeds its parent's (ties go to the shallower), so the kept
set contains the parent of every kept node. Children are deterministic picks, so each carries a one-hot ``q``
(EAGLE's ``qx = 1``) and the exact rule over the tree stays lossless. Every sample grows its own tree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..tree import TreeLayout, TreeShape
from .base import Draft, one_hot

# Orders kept nodes by depth first: far above any |log-confidence| a clamped probability can give at depth 8.
_DEPTH_FIRST = 1e5


def grow_tree(
    forward: Callable[[torch.Tensor, torch.Tensor, TreeLayout, torch.Tensor], torch.Tensor],
    q_root: torch.Tensor,
    shape: TreeShape,
    budget: int,
) -> tuple[Draft, torch.Tensor]:
    """The tree below the root whose draft distribution is ``q_root`` ``[B, V]``; ``forward(tokens, depth,
    layout, parent)`` returns the draft distributions ``[B, n, V]`` of ``n`` candidates at ``depth`` under
    ``layout`` (``layout.node``: their candidate-layout tree indices; ``parent``: their parents', 0 the root), so
    a drafter that feeds a parent's state to its children (EAGLE's predicted hidden state) can find it.

    Returns the draft (nodes in topological order, siblings most confident first) and ``[B, budget + 1]``: the
    candidate-layout tree index of each tree index, where the forwards wrote the candidates' keys and values.
    """
    b, vocab = q_root.shape
    device = q_root.device
    m = candidates(shape)
    ancestors = torch.zeros(b, m + 1, m + 1, dtype=torch.bool, device=device)
    ancestors[:, 0, 0] = True
    rows = torch.arange(b, device=device)[:, None]
    value, token = q_root.topk(shape.branching[0], -1)
    tokens, scores, parents, depths = [token], [value.clamp_min(1e-30).log()], [torch.full_like(token, -1)], [1]
    count = token.shape[1]
    ancestors[rows, 1 + torch.arange(count, device=device), 0] = True
    ancestors[rows, 1 + torch.arange(count, device=device), 1 + torch.arange(count, device=device)] = True
    level = torch.arange(count, device=device).expand(b, -1)  # candidate indices of the newest depth
    for d, k in enumerate(shape.branching[1:], start=1):
        beam = min(k, level.shape[1])
        level_scores = torch.cat(scores, 1).gather(1, level)
        best = level.gather(1, level_scores.topk(beam, -1).indices)  # [B, beam] candidates to expand
        layout = TreeLayout(1 + best, torch.full_like(best, d), ancestors[rows, 1 + best])
        parent_index = 1 + torch.cat(parents, 1).gather(1, best)  # tree index of each forwarded one's parent
        q = forward(torch.cat(tokens, 1).gather(1, best), torch.full_like(best, d), layout, parent_index)
        value, token = q.topk(k, -1)  # [B, beam, k]
        parent_score = torch.cat(scores, 1).gather(1, best)
        new = torch.arange(count, count + beam * k, device=device)
        parent = best.repeat_interleave(k, 1)
        ancestors[rows, 1 + new] = ancestors[rows, 1 + parent]
        ancestors[rows, 1 + new, 1 + new] = True
        tokens.append(token.flatten(1))
        scores.append((parent_score[..., None] + value.clamp_min(1e-30).log()).flatten(1))
        parents.append(parent)
        depths.append(d + 1)
        count += beam * k
        level = new.expand(b, -1)
    all_tokens, all_scores, all_parents = torch.cat(tokens, 1), torch.cat(scores, 1), torch.cat(parents, 1)
    depth = torch.cat([torch.full_like(t, dd) for t, dd in zip(tokens, depths, strict=True)], 1)
    kept = (all_scores - 1e-6 * depth).topk(min(budget, count), -1).indices
    # Topological order: by depth, then most confident first, so a rule tries the likeliest sibling first.
    key = depth.gather(1, kept) * _DEPTH_FIRST - all_scores.gather(1, kept).clamp_min(-_DEPTH_FIRST / 10)
    kept = kept.gather(1, key.argsort(-1))
    position = torch.full((b, count), -1, dtype=torch.long, device=device)
    position.scatter_(1, kept, torch.arange(kept.shape[1], device=device).expand(b, -1))
    parent = all_parents.gather(1, kept)
    parent = torch.where(parent >= 0, position.gather(1, parent.clamp(min=0)), -1)
    chosen = all_tokens.gather(1, kept)
    draft = Draft(chosen, one_hot(chosen, vocab), parent)
    return draft, torch.cat([torch.zeros_like(kept[:, :1]), 1 + kept], 1)


def candidates(shape: TreeShape) -> int:
    """How many candidates growing ``shape`` may score: the root's ``k_1`` children, then ``k_d`` squared a depth."""
    size = total = shape.branching[0]
    for k in shape.branching[1:]:
        size = min(k, size) * k
        total += size
    return total
