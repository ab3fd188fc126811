"""Token trees for speculative drafting: a static shape (top-k per depth), and what a tree's parents imply.

A tree of ``N`` drafted nodes hangs below the last committed token (the *root*, tree index 0); drafted node ``n``
has tree index ``n + 1`` and ``parents[b, n]`` is the index of its parent among the drafted nodes (``-1``: the
root). Nodes come in topological order (a parent before its children) and siblings in the order a rule tries
them. A chain is the tree whose node ``i`` has parent ``i - 1``.

The verify forward lays the root and the nodes out at consecutive cache slots (the root at its own position's
slot, node ``n`` at ``root + n + 1``) while each token keeps the position of its depth; attention among the new
tokens follows the ancestor relation (:class:`TreeLayout`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch


def ancestors_of(parents: torch.Tensor) -> torch.Tensor:
    """``[B, N+1, N+1]`` bool over tree indices (root 0): ``a[b, i, j]`` when ``j`` is ``i`` or an ancestor of ``i``.

    Squaring the one-step relation doubles the reach of each entry, so ``log2(N)`` batched products suffice.
    """
    b, n = parents.shape
    full = torch.cat([parents.new_full((b, 1), -1), parents + 1], 1)  # tree index of each index's parent
    step = torch.eye(n + 1, device=parents.device).expand(b, -1, -1).clone()
    batch = torch.arange(b, device=parents.device)[:, None]
    rows = torch.arange(1, n + 1, device=parents.device)[None, :]
    step[batch, rows, full[:, 1:].clamp(min=0)] = 1.0  # one parent per drafted node, every row its own
    for _ in range(max(1, math.ceil(math.log2(n + 1)))):
        step = (step @ step).clamp_(max=1.0)
    return step > 0


def depths_of(ancestors: torch.Tensor) -> torch.Tensor:
    """``[B, N+1]`` depth of every tree index (the root 0, its children 1, ...)."""
    return ancestors.sum(-1) - 1


def children_of(parents: torch.Tensor) -> torch.Tensor:
    """``[B, N+1, K]``: the drafted nodes (0..N-1) below each tree index, in sibling order, ``-1`` past the last;
    ``K`` is the most children any node has."""
    b, n = parents.shape
    parent = parents + 1
    order = torch.arange(n, device=parents.device)
    earlier = (parent[:, :, None] == parent[:, None, :]) & (order[None, :] < order[:, None])[None]
    rank = earlier.sum(-1)  # how many earlier siblings each node has
    k = int(rank.max()) + 1 if n else 1
    table = parents.new_full((b, (n + 1) * k), -1)
    table.scatter_(1, parent * k + rank, order.expand(b, n))
    return table.view(b, n + 1, k)


def _run(part: str) -> list[int]:
    """``"k"`` or ``"k*n"`` (``n`` depths of ``k`` children) as the branching of those depths."""
    k, star, times = part.partition("*")
    count = int(times) if star else 1
    if count < 1:
        raise ValueError(part)
    return [int(k)] * count


@dataclass(frozen=True)
class TreeShape:
    """A static tree given as its branching per depth: ``"4x2x2x1"`` gives every node at depth ``d - 1`` the
    ``k_d`` most likely (or ``k_d`` sampled) children, as Medusa's and LANTERN++'s static trees do; nodes in
    breadth-first order, each level parent-major, so a parent's children sit together, most likely first."""

    branching: tuple[int, ...]

    def __post_init__(self):
        if not self.branching or any(not isinstance(k, int) or k < 1 for k in self.branching):
            raise ValueError(f"tree: every depth needs at least 1 child per node, got {self.branching!r}")

    @classmethod
    def parse(cls, text: str | TreeShape) -> TreeShape:
        """``"4x2x2x1"`` (children per node at depths 1, 2, ...) as a shape; ``k*n`` stands for ``n`` depths of
        ``k`` (``"2x1*31"``: a deep Jacobi tree); a clear error names ``tree``."""
        if isinstance(text, TreeShape):
            return text
        try:
            branching = [k for part in str(text).lower().split("x") for k in _run(part)]
        except ValueError:
            raise ValueError(
                f"tree must look like 4x2x2x1 or 2x1*15 (children per node at each depth), got {text!r}"
            ) from None
        return cls(tuple(branching))

    def __str__(self) -> str:
        parts, i = [], 0
        while i < len(self.branching):  # runs written k*n, as parse reads them
            k, n = self.branching[i], 1
            while i + n < len(self.branching) and self.branching[i + n] == k:
                n += 1
            parts.append(f"{k}*{n}" if n > 2 else "x".join([str(k)] * n))
            i += n
        return "x".join(parts)

    @property
    def depth(self) -> int:
        return len(self.branching)

    @cached_property
    def level_sizes(self) -> list[int]:
        """Nodes at depths 1, 2, ...: the running products of the branching."""
        sizes, width = [], 1
        for k in self.branching:
            width *= k
            sizes.append(width)
        return sizes

    @property
    def nodes(self) -> int:
        return sum(self.level_sizes)

    def level(self, d: int) -> slice:
        """Drafted-node indices of depth ``d + 1`` (``d`` from 0)."""
        start = sum(self.level_sizes[:d])
        return slice(start, start + self.level_sizes[d])

    @cached_property
    def parents(self) -> torch.Tensor:
        """``[N]`` parent of each drafted node (``-1``: the root)."""
        out, start_prev = [], -1
        for d, k in enumerate(self.branching):
            prev = 1 if d == 0 else self.level_sizes[d - 1]
            base = torch.arange(prev).repeat_interleave(k)
            out.append(torch.full_like(base, -1) if d == 0 else base + start_prev)
            start_prev = self.level(d).start
        return torch.cat(out)

    @cached_property
    def node_depth(self) -> torch.Tensor:
        """``[N]`` each drafted node's depth, from 0 (the root's children)."""
        return torch.arange(self.depth).repeat_interleave(torch.tensor(self.level_sizes))

    @cached_property
    def sibling_rank(self) -> torch.Tensor:
        """``[N]`` each node's place among its siblings (0: the first child, the most likely one)."""
        return torch.cat([torch.arange(size) % k for size, k in zip(self.level_sizes, self.branching)])

    @cached_property
    def ancestors(self) -> torch.Tensor:
        """``[N+1, N+1]`` ancestor-or-self relation over tree indices."""
        return ancestors_of(self.parents[None])[0]


@dataclass
class TreeLayout:
    """How a forward's tokens sit in a tree: ``node`` ``[B, T]`` the tree index of each forwarded token, its
    ``depth`` ``[B, T]``, and ``ancestors`` ``[B, T, N+1]`` (which tree indices each token may attend to).

    A token's position is the root's position plus its depth; its slot is the root's slot plus its tree index,
    so slot - position = node - depth whatever shift a wrapper (guidance) gives a row's positions.
    """

    node: torch.Tensor
    depth: torch.Tensor
    ancestors: torch.Tensor

    @classmethod
    def full(cls, ancestors: torch.Tensor) -> TreeLayout:
        """The verify forward's layout: the root and every drafted node, given their ``[B, N+1, N+1]`` relation."""
        b, n1, _ = ancestors.shape
        node = torch.arange(n1, device=ancestors.device).expand(b, n1)
        return cls(node, depths_of(ancestors), ancestors)

    def rows(self, count: int) -> TreeLayout:
        """The layout for ``count`` rows (a guidance wrapper forwards every sample twice, cond rows first)."""
        if count == self.node.shape[0]:
            return self
        times = count // self.node.shape[0]
        return TreeLayout(self.node.repeat(times, 1), self.depth.repeat(times, 1), self.ancestors.repeat(times, 1, 1))


def along(x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``x[b, columns[b, j]]`` for ``x`` ``[B, T, ...]`` and ``columns`` ``[B, J]``."""
    idx = columns.view(*columns.shape, *([1] * (x.dim() - 2))).expand(*columns.shape, *x.shape[2:])
    return x.gather(1, idx)
