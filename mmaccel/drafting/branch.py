"""How a tree drafter picks a node's children from its distribution, and the ``q`` each child then carries."""

from __future__ import annotations

import torch

from ..sampling import SampleRNG, sample
from ..tree import TreeShape
from .base import Drafter, check_window, one_hot
from .dynamic_tree import candidates

#: ``"top"``: the ``k`` most likely tokens, deterministic, so each child's ``q`` is one-hot on it (EAGLE's and
#: LANTERN++'s static trees). ``"sample"``: ``k`` draws without replacement; child ``j``'s ``q`` is the drafter's
#: distribution with the earlier siblings removed and renormalised, the distribution it was drawn from.
BRANCHES = ("top", "sample")


def check_branch(branch: str) -> str:
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
    return branch


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
        left = mass > 0
        # Draw from the very q_j reported: a floor on the mass would leave q_j unnormalised when the drafter is
        # all but certain (mass below the floor), and the exact rule would then read a q the draw never had.
        q_j = rest / torch.where(left, mass, 1.0)
        # Fewer than k tokens with mass left: the child is then a deterministic pick, whose q is one-hot.
        token = torch.where(left[..., 0], sample(q_j, uniforms[..., j]), rest.argmax(-1))
        q_j = torch.where(left, q_j, one_hot(token, vocab))
        tokens.append(token)
        qs.append(q_j)
        rest = rest.scatter(-1, token[..., None], 0.0)
    return torch.stack(tokens, 2).flatten(1), torch.stack(qs, 2).flatten(1, 2)


class TreeDrafter(Drafter):
    """A drafter that proposes a chain of ``window`` tokens, a static tree (``tree="4x2x2x1"``, children picked
    by ``branch``) or, with ``budget``, a dynamic tree grown within that shape (EAGLE-2)."""

    tree: TreeShape | None = None
    budget: int | None = None

    def set_shape(self, window: int, tree: str | TreeShape | None, branch: str, budget: int | None) -> None:
        """Check and keep the drafting shape; a tree's depth is the window."""
        shape = None if tree is None else TreeShape.parse(tree)
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget (the dynamic tree's node budget) must be an integer >= 1, got {budget!r}")
        if budget is not None and shape is None:
            raise ValueError("budget needs a tree shape (tree=4x4x4x4: the depth and the expansion at each depth)")
        check_branch(branch)
        self.tree, self.budget, self.branch = shape, budget, branch
        self.window = check_window(window) if shape is None else shape.depth

    @property
    def nodes(self) -> int:
        if self.tree is None:
            return self.window
        if self.budget is None:
            return self.tree.nodes
        return max(self.budget, candidates(self.tree))

    def resize(self, state, window: int) -> None:
        if self.tree is not None:
            raise ValueError("a tree drafter drafts a fixed shape; window='auto' needs a chain")
        self.window = check_window(window)
