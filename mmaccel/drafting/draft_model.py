"""Drafting with a smaller model (Leviathan et al. 2023; Chen et al. 2023)."""

from __future__ import annotations

import torch

from ..models.base import ModelOutput, TokenModel, reorder
from ..sampling import SamplingConfig, sample, target_probs
from ..tree import TreeLayout
from .base import Draft
from .branch import TreeDrafter, branch_children
from .dynamic_tree import grow_tree


class DraftModelDrafter(TreeDrafter):
    """A smaller model behind the same :class:`TokenModel` interface drafts ``window`` tokens autoregressively.

    It keeps its own position-addressed cache in step with the target's: each proposal first rewrites the last
    two committed tokens (the second-last may be a fully accepted draft it never forwarded), then drafts.
    ``sampling`` defaults to the target's settings, so ``q`` is the draft model's processed distribution.

    ``tree="4x2x2x1"`` drafts a static tree instead (:class:`~mmaccel.tree.TreeShape`; the window is its depth):
    each depth costs one draft forward over the previous depth's nodes under tree attention, and every node gets
    its ``k`` children by ``branch``: ``"top"`` (the ``k`` most likely, one-hot ``q``: EAGLE's and LANTERN++'s
    static trees) or ``"sample"`` (``k`` draws without replacement, each with the rest of the distribution as its
    ``q``). After the step the accepted path's keys and values move to their chain slots (:meth:`keep_path`).

    ``budget=N`` with a tree grows a dynamic tree instead, EAGLE-2 style (:mod:`mmaccel.drafting.dynamic_tree`):
    the shape then gives the depth and how many nodes are expanded, and into how many children, at each depth;
    the ``N`` most confident candidates form each sample's own tree.
    """

    def __init__(
        self,
        model: TokenModel,
        window: int = 4,
        sampling: SamplingConfig | None = None,
        tree: str | None = None,
        branch: str = "top",
        budget: int | None = None,
    ):
        self.model = model
        self.set_shape(window, tree, branch, budget)
        self.sampling = sampling

    def begin(self, state, prefill: ModelOutput) -> None:
        if self.model.vocab_size != state.vocab_size:
            raise ValueError(
                f"draft model vocabulary ({self.model.vocab_size}) differs from the target's ({state.vocab_size})"
            )
        self._sampling = self.sampling or state.sampling
        self.cache = self.model.new_cache(state.batch_size, state.max_length)
        self.model.prefill(state.prompt, self.cache)
        state.stats.draft_nfe += 1
        self._first = True

    def reorder(self, rows: torch.Tensor) -> None:
        reorder(self.model, self.cache, rows)

    def _catch_up(self, state) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens to forward before drafting, and their positions."""
        if self._first:  # the prompt is in the cache; only the first generated token is new
            self._first = False
            return state.last_token[:, None], state.last_pos[:, None]
        tokens = state.generated.gather(1, (state.count[:, None] - 2 + torch.arange(2, device=state.device)))
        return tokens, state.last_pos[:, None] - 1 + torch.arange(2, device=state.device)

    @torch.no_grad()
    def propose(self, state) -> Draft:
        if self.tree is not None:
            return self._propose_tree(state)
        w = self.window
        tokens, positions = self._catch_up(state)
        uniforms = state.rng.uniform(w)
        drafts, qs = [], []
        for i in range(w):
            logits = self.model.forward(tokens, positions, self.cache).logits[:, -1]
            state.stats.draft_nfe += 1
            q = target_probs(logits, self._sampling)
            token = sample(q, uniforms[:, i])
            drafts.append(token)
            qs.append(q)
            tokens, positions = token[:, None], positions[:, -1:] + 1
        return Draft(torch.stack(drafts, 1), torch.stack(qs, 1))

    def keep_path(self, columns: torch.Tensor) -> None:
        if self.budget is not None:  # a dynamic tree's nodes sit where their candidates were forwarded
            columns = self._slots.gather(1, columns)
        self.cache.keep_path(columns)  # the next proposal rewrites the last two, as a chain's does

    def _propose_tree(self, state) -> Draft:
        shape, device = self.tree, state.device
        tokens, positions = self._catch_up(state)
        logits = self.model.forward(tokens, positions, self.cache).logits[:, -1:]
        state.stats.draft_nfe += 1
        if self.budget is not None:

            def forward(tokens: torch.Tensor, depth: torch.Tensor, layout: TreeLayout, parent: torch.Tensor):
                with self.cache.tree_attention(layout):
                    out = self.model.forward(tokens, state.last_pos[:, None] + depth, self.cache)
                state.stats.draft_nfe += 1
                return target_probs(out.logits, self._sampling)

            draft, self._slots = grow_tree(forward, target_probs(logits[:, -1], self._sampling), shape, self.budget)
            return draft
        batch = state.batch_size
        ancestors = shape.ancestors.to(device)
        parents, drafts, qs = shape.parents.to(device).expand(batch, -1), [], []
        for d, k in enumerate(shape.branching):
            q = target_probs(logits, self._sampling)  # [B, nodes at depth d, V]
            token, q_node = branch_children(q, k, self.branch, state.rng)
            drafts.append(token)
            qs.append(q_node)
            if d + 1 < shape.depth:  # the deepest nodes are never forwarded: nothing is drafted below them
                level = torch.arange(shape.level(d).start, shape.level(d).stop, device=device) + 1
                depth = torch.full_like(level, d + 1).expand(batch, -1)
                layout = TreeLayout(level.expand(batch, -1), depth, ancestors[level].expand(batch, -1, -1))
                with self.cache.tree_attention(layout):
                    logits = self.model.forward(token, state.last_pos[:, None] + depth, self.cache).logits
                state.stats.draft_nfe += 1
        return Draft(torch.cat(drafts, 1), torch.cat(qs, 1), parents)
