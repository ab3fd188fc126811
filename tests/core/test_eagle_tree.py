"""EAGLE trees: static (EAGLE-1) and dynamic (EAGLE-2) trees from the EAGLE head reproduce greedy AR with every
rule at batch 4 with different prompt lengths; a head that predicts the target exactly gets whole paths accepted;
the exact rule over its trees keeps the AR distribution (chi-square over 20,000 draws; the sibling-residual-free
control is caught); each tree node's head output equals a plain chain forward over that node's path."""

from __future__ import annotations

import pytest
import torch

from mmaccel import SamplingConfig, SpeculativeDecoder
from mmaccel.acceptance import ExactRule
from mmaccel.drafting import EagleDrafter
from mmaccel.methods import build_decoder
from mmaccel.models import SlotCache, TokenPrompt
from mmaccel.tree import TreeLayout

from .test_eagle import GREEDY, NEW_TOKENS, PROMPTS, RULES, bigram_head, copying_target, head_for
from .test_exact_distribution import CONFIGS, CONTROL_ALPHA, LOSSLESS_ALPHA, PROMPT, ROWS, ar_joint, tables
from .test_exact_distribution import NEW_TOKENS as DRAWS
from .test_exact_distribution import window_pvalues as pvalues_of
from .test_tree_exact import NoSiblingResidualRule

TREES = {
    "static": {"tree": "3x2x1"},
    "sampled": {"tree": "2x2x1", "branch": "sample"},
    "dynamic": {"tree": "3x3x3x3", "budget": 10},
    "tiny-budget": {"tree": "2x2x2", "budget": 1},
}
ALL_RULES = {**RULES, "lantern++": {"k": 8}}


@pytest.fixture(scope="module")
def case(target):
    prompt = TokenPrompt.from_lists(PROMPTS)
    return prompt, SpeculativeDecoder(target, sampling=GREEDY).generate(prompt, NEW_TOKENS).tokens


@pytest.mark.parametrize("tree", sorted(TREES))
@pytest.mark.parametrize("rule", sorted(ALL_RULES))
def test_eagle_tree_is_greedy_ar(target, case, tree, rule):
    (prompt, ar_tokens), drafter = case, EagleDrafter(head_for(target.model), **TREES[tree])
    out = SpeculativeDecoder(target, drafter, rule, GREEDY, **ALL_RULES[rule]).generate(prompt, NEW_TOKENS)
    assert torch.equal(out.tokens, ar_tokens)


@pytest.mark.parametrize("tree", ["static", "dynamic"])
@pytest.mark.parametrize("retire_below", [0.0, 0.75])
def test_a_head_that_predicts_the_target_gets_whole_paths(tiny_llama, case, tree, retire_below):
    """Every top child matches: each step commits depth + 1 tokens, and the slots stay in step throughout."""
    target, head = copying_target(tiny_llama)
    prompt = case[0]
    ar = SpeculativeDecoder(target, sampling=GREEDY).generate(prompt, NEW_TOKENS).tokens
    drafter = EagleDrafter(head, **TREES[tree])
    out = SpeculativeDecoder(target, drafter, "greedy", GREEDY, retire_below=retire_below).generate(prompt, NEW_TOKENS)
    assert torch.equal(out.tokens, ar)
    depth = drafter.tree.depth
    assert out.stats.nfe == 1 + -(-(NEW_TOKENS - 1) // (depth + 1))


@pytest.mark.parametrize("name", ["eagle-tree", "eagle-dynamic", "lantern++-eagle"])
def test_eagle_tree_methods_are_greedy_ar(target, case, name):
    prompt, ar_tokens = case
    decoder = build_decoder(target, name, sampling=GREEDY, eagle=head_for(target.model))
    assert decoder.drafter.tree is not None
    assert torch.equal(decoder.generate(prompt, NEW_TOKENS).tokens, ar_tokens)


def test_tree_nodes_equal_chain_forwards_over_their_paths(target):
    """The head under tree attention over its own cache gives each node what a chain forward over the node's
    path (root pair, then the path's tokens fed their parents' predictions) gives."""
    head = head_for(target.model)
    torch.manual_seed(0)
    b, d = 2, head.hidden_size
    context = torch.randn(b, 4, d)
    context_tokens = torch.randint(0, head.vocab_size, (b, 4))
    slots = torch.arange(4).expand(b, -1)
    cache = SlotCache(32)
    root = head(context, context_tokens, slots, cache)[:, -1:]  # the root pair's prediction at slot 3
    # Depth 1: two children of the root; depth 2: one child under each.
    first = torch.randint(0, head.vocab_size, (b, 2))
    ancestors = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [1, 1, 0, 1, 0], [1, 0, 1, 0, 1]])
    ancestors = ancestors.bool().expand(b, -1, -1)
    root_slot = torch.full((b, 1), 3)
    layout = TreeLayout(torch.tensor([1, 2]).expand(b, -1), torch.ones(b, 2, dtype=torch.long), ancestors[:, 1:3])
    with cache.tree_attention(layout):
        h1 = head(root.expand(-1, 2, -1), first, (root_slot + 1).expand(-1, 2), cache)
    second = torch.randint(0, head.vocab_size, (b, 2))
    layout = TreeLayout(torch.tensor([3, 4]).expand(b, -1), torch.full((b, 2), 2), ancestors[:, 3:5])
    with cache.tree_attention(layout):
        h2 = head(h1, second, (root_slot + 2).expand(-1, 2), cache)
    for child in range(2):  # each path alone, as a chain after the same context
        chain = SlotCache(32)
        head(context, context_tokens, slots, chain)
        c1 = head(root, first[:, child : child + 1], root_slot + 1, chain)
        c2 = head(c1, second[:, child : child + 1], root_slot + 2, chain)
        torch.testing.assert_close(h1[:, child : child + 1], c1, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h2[:, child : child + 1], c2, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------- exact rule: the AR distribution
def eagle_tree_samples(bigram_model, rule, tree: str, config: SamplingConfig):
    table = tables()[0]
    prompt = TokenPrompt(torch.tensor([PROMPT]).expand(ROWS, -1).clone(), torch.full((ROWS,), len(PROMPT)))
    drafter = EagleDrafter(bigram_head(), **TREES[tree])
    out = SpeculativeDecoder(bigram_model(table), drafter, rule, config).generate(prompt, DRAWS, seeds=range(ROWS))
    return out.tokens, out.stats.tokens_per_step[0], ar_joint(table, config, DRAWS)


@pytest.mark.slow
@pytest.mark.parametrize("tree", ["sampled", "dynamic"])
def test_exact_rule_over_eagle_trees_follows_the_ar_distribution(bigram_model, chi2_pvalue, tree):
    tokens, first_step, joint = eagle_tree_samples(bigram_model, ExactRule(), tree, CONFIGS["t1"])
    assert (first_step == 1).float().mean() > 0.05 and (first_step >= 2).float().mean() > 0.05  # both paths
    pvalues = pvalues_of(tokens, joint, chi2_pvalue)
    assert min(pvalues.values()) > LOSSLESS_ALPHA, pvalues


@pytest.mark.slow
def test_detector_fires_on_eagle_trees_without_the_sibling_residual(bigram_model, chi2_pvalue):
    tokens, _, joint = eagle_tree_samples(bigram_model, NoSiblingResidualRule(), "sampled", CONFIGS["t1"])
    pvalues = pvalues_of(tokens, joint, chi2_pvalue)
    assert min(pvalues.values()) < CONTROL_ALPHA, pvalues


def test_bad_tree_settings_are_refused(target):
    head = head_for(target.model)
    with pytest.raises(ValueError, match="budget"):
        EagleDrafter(head, tree="2x2", budget=0)
    with pytest.raises(ValueError, match="budget needs a tree"):
        EagleDrafter(head, budget=4)
    with pytest.raises(ValueError, match="branch"):
        EagleDrafter(head, tree="2x2", branch="widest")
    with pytest.raises(ValueError, match="tree"):
        EagleDrafter(head, tree="2xa")
    with pytest.raises(ValueError, match="auto"):
        build_decoder(target, "eagle-tree", {"window": "auto"}, eagle=head)
