"""Tree attention over the position-addressed cache: every node's logits equal a full forward over its path, and
after the accepted path is kept the cache holds exactly what the equivalent chain step writes."""

from __future__ import annotations

import pytest
import torch

from mmaccel.models import CFGModel, GuidedPrompt, TokenPrompt
from mmaccel.tree import TreeLayout, TreeShape, ancestors_of, children_of, depths_of

PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9]]  # different lengths: every row has its own root slot
# A ragged tree (not a static shape): node 0 and 1 at depth 1, 2 and 3 below node 0, 4 below 1, 5 below 2,
# 6 below 5: three paths of different depths.
PARENTS = [-1, -1, 0, 0, 1, 2, 5]
TOKENS = [[10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26]]


def path_to(node: int) -> list[int]:
    out = []
    while node >= 0:
        out.append(node)
        node = PARENTS[node]
    return out[::-1]


def test_tree_helpers():
    parents = torch.tensor([PARENTS])
    anc = ancestors_of(parents)
    assert depths_of(anc)[0].tolist() == [0, 1, 1, 2, 2, 2, 3, 4]
    assert children_of(parents)[0, 0].tolist() == [0, 1] and children_of(parents)[0, 1].tolist() == [2, 3]
    shape = TreeShape.parse("2x2x1")
    assert shape.nodes == 2 + 4 + 4 and shape.parents.tolist() == [-1, -1, 0, 0, 1, 1, 2, 3, 4, 5]
    for bad in ("", "2x0", "ax2", "2x-1"):
        with pytest.raises(ValueError, match="tree"):
            TreeShape.parse(bad)


def tree_forward(model, prompt, cache):
    """Prefill, then forward the root (the prompt's last token... here a fixed token) and the tree's nodes."""
    b = len(PROMPTS)
    parents = torch.tensor([PARENTS] * b)
    anc = ancestors_of(parents)
    layout = TreeLayout.full(anc)
    last = prompt.lengths[:, None]  # the root sits right after the prompt
    tokens = torch.cat([torch.full((b, 1), 30), torch.tensor(TOKENS)], 1)
    positions = last + layout.depth
    with cache.tree_attention(layout):
        out = model.forward(tokens, positions, cache)
    return out


@pytest.mark.parametrize("guided", [False, True])
def test_node_logits_equal_a_full_forward_over_the_path(target, guided):
    prompt = TokenPrompt.from_lists(PROMPTS)
    model = CFGModel(target, 1.5) if guided else target
    full_prompt = GuidedPrompt(prompt, TokenPrompt.from_lists([[0], [0, 0]])) if guided else prompt
    cache = model.new_cache(len(PROMPTS), 32)
    model.prefill(full_prompt, cache)
    out = tree_forward(model, prompt, cache)
    for row, ids in enumerate(PROMPTS):
        for node in range(len(PARENTS)):
            seq = ids + [30] + [TOKENS[row][n] for n in path_to(node)]
            c = target.model(input_ids=torch.tensor([seq])).logits[0, -1]
            if guided:
                uncond = [0] * (row + 1) + seq[len(ids) :]
                u = target.model(input_ids=torch.tensor([uncond])).logits[0, -1]
                c = u + 1.5 * (c - u)
            torch.testing.assert_close(out.logits[row, node + 1], c, atol=1e-4, rtol=1e-4)


def test_cache_after_keep_path_equals_the_chain_step(target):
    """Per row a different accepted path; slots up to the path's end match a chain forward of that path."""
    prompt = TokenPrompt.from_lists(PROMPTS)
    paths = [path_to(6), path_to(4)]  # depth 4 in row 0, depth 2 in row 1
    depth = max(len(p) for p in paths)
    tree_cache = target.new_cache(2, 32)
    target.prefill(prompt, tree_cache)
    tree_forward(target, prompt, tree_cache)
    columns = torch.tensor([[0] + [n + 1 for n in p] + [0] * (depth - len(p)) for p in paths])
    tree_cache.keep_path(columns)

    chain_cache = target.new_cache(2, 32)
    target.prefill(prompt, chain_cache)
    chain = torch.tensor([[30] + [TOKENS[r][n] for n in p] + [0] * (depth - len(p)) for r, p in enumerate(paths)])
    target.forward(chain, prompt.lengths[:, None] + torch.arange(depth + 1), chain_cache)
    for row, p in enumerate(paths):
        end = int(prompt.lengths[row]) + len(p) + 1  # the root and the accepted path
        for a, b in zip(tree_cache.layers, chain_cache.layers, strict=True):
            torch.testing.assert_close(a.keys[row, :, :end], b.keys[row, :, :end], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(a.values[row, :, :end], b.values[row, :, :end], atol=1e-5, rtol=1e-5)


def test_each_row_has_its_own_tree():
    parents = torch.tensor([PARENTS, [-1, 0, 1, 2, 3, 4, 5]])  # a ragged tree and a chain
    anc = ancestors_of(parents)
    assert depths_of(anc)[1].tolist() == list(range(8))
    assert depths_of(anc)[0].tolist() == [0, 1, 1, 2, 2, 2, 3, 4]
    assert children_of(parents)[1, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, -1]


def test_bad_tree_input_names_the_parameter(small_draft):
    from mmaccel import DraftModelDrafter, MultiHeadDrafter
    from mmaccel.drafting import DraftHeads
    from mmaccel.methods import build_decoder

    with pytest.raises(ValueError, match="tree"):
        DraftModelDrafter(small_draft, tree="4xx2")
    with pytest.raises(ValueError, match="branch"):
        DraftModelDrafter(small_draft, tree="2x1", branch="widest")
    for budget in (0, -3, 2.5):
        with pytest.raises(ValueError, match="budget"):
            DraftModelDrafter(small_draft, tree="2x2", budget=budget)
    with pytest.raises(ValueError, match="budget needs a tree"):
        DraftModelDrafter(small_draft, budget=4)
    with pytest.raises(ValueError, match="heads"):
        MultiHeadDrafter(DraftHeads(8, 16, num_heads=2), tree="2x2x1")
    with pytest.raises(ValueError, match="window='auto'"):
        build_decoder(small_draft, "draft-tree", {"window": "auto"}, draft=small_draft)
    with pytest.raises(ValueError, match="tree"):
        build_decoder(small_draft, "lantern++", {"tree": "0x2", "k": 4}, draft=small_draft)


def test_dynamic_tree_keeps_the_parent_of_every_node():
    from mmaccel.drafting.dynamic_tree import candidates, grow_tree

    g = torch.Generator().manual_seed(0)
    shape, budget, vocab = TreeShape.parse("3x3x3"), 9, 12
    q_root = torch.softmax(2 * torch.randn(4, vocab, generator=g), -1)

    def forward(tokens, depth, layout, parent):  # any distribution that depends on the candidate's token
        return torch.softmax(torch.sin(tokens[..., None] * torch.arange(vocab) + depth[..., None]) * 3, -1)

    draft, slots = grow_tree(forward, q_root, shape, budget)
    assert draft.tokens.shape == (4, budget) and slots.shape == (4, budget + 1)
    parents = draft.parents
    assert bool((parents < torch.arange(budget)).all())  # topological: a parent before its children
    assert bool((draft.depth <= shape.depth).all()) and int(slots.max()) <= candidates(shape)
    assert len({tuple(row) for row in parents.tolist()}) > 1  # rows grow trees of their own shapes
