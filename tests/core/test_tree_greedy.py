"""Tree drafts at temperature 0: every tree shape, rule and tree drafter reproduces greedy AR token for token, and
a chain given as a tree decodes exactly as the chain path does."""

from __future__ import annotations

import pytest
import torch

from mmaccel import DraftModelDrafter, MultiHeadDrafter, SamplingConfig, SpeculativeDecoder
from mmaccel.drafting import Draft, Drafter
from mmaccel.models import CFGModel, GuidedPrompt, TokenPrompt

from .test_lossless_greedy import GREEDY, NEW_TOKENS, PROMPTS, make_drafter

RULES = {"exact": {}, "greedy": {}, "typical": {}, "lantern": {"k": 8, "delta": 0.3}, "lantern++": {"k": 8}}
SHAPES = ["3x2x1", "2x2x2x1", "1x1x1"]


@pytest.fixture(scope="module")
def case(target):
    """Prompts of different lengths and greedy AR's tokens for them."""
    prompt = TokenPrompt.from_lists(PROMPTS)
    return prompt, SpeculativeDecoder(target, sampling=GREEDY).generate(prompt, NEW_TOKENS).tokens


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_draft_model_tree_is_greedy_ar(target, small_draft, case, shape, rule):
    (prompt, ar_tokens), drafter = case, DraftModelDrafter(small_draft, tree=shape)
    out = SpeculativeDecoder(target, drafter, rule, GREEDY, **RULES[rule]).generate(prompt, NEW_TOKENS)
    assert torch.equal(out.tokens, ar_tokens)


@pytest.mark.parametrize("branch", ["top", "sample"])
def test_self_drafted_tree_accepts_whole_paths(target, case, branch):
    """The target drafting for itself: the top child always matches, so each step commits depth + 1 tokens."""
    (prompt, ar_tokens), drafter = case, DraftModelDrafter(target, tree="2x2x1", branch=branch)
    out = SpeculativeDecoder(target, drafter, "greedy", GREEDY).generate(prompt, NEW_TOKENS)
    assert torch.equal(out.tokens, ar_tokens)
    if branch == "top":
        assert out.stats.nfe == 1 + -(-(NEW_TOKENS - 1) // 4)


@pytest.mark.parametrize("shape", ["3x2x1x1", "2x2"])
@pytest.mark.parametrize("rule", ["exact", "greedy", "lantern"])
def test_heads_tree_is_greedy_ar(target, case, shape, rule):
    (prompt, ar_tokens), drafter = case, MultiHeadDrafter(make_drafter("heads", target, None).heads, tree=shape)
    out = SpeculativeDecoder(target, drafter, rule, GREEDY, **RULES[rule]).generate(prompt, NEW_TOKENS)
    assert torch.equal(out.tokens, ar_tokens)


def test_guided_tree_is_guided_ar(target, small_draft, case):
    """Under classifier-free guidance the uncond rows follow their sample's tree and its accepted path."""
    uncond = TokenPrompt.from_lists([[0] * (i % 3 + 1) for i in range(len(PROMPTS))])
    guided = GuidedPrompt(case[0], uncond)
    ar = SpeculativeDecoder(CFGModel(target, 2.0), sampling=GREEDY).generate(guided, NEW_TOKENS).tokens
    drafter = DraftModelDrafter(CFGModel(small_draft, 2.0), tree="3x2x1")
    out = SpeculativeDecoder(CFGModel(target, 2.0), drafter, "greedy", GREEDY).generate(guided, NEW_TOKENS)
    assert torch.equal(out.tokens, ar)


class AsTree(Drafter):
    """A chain drafter whose drafts are handed over as a width-one tree."""

    def __init__(self, inner: Drafter):
        self.inner, self.window, self.needs_hidden = inner, inner.window, inner.needs_hidden

    def begin(self, state, prefill):
        self.inner.begin(state, prefill)

    def propose(self, state):
        d = self.inner.propose(state)
        parents = torch.arange(-1, d.tokens.shape[1] - 1).expand_as(d.tokens)
        return Draft(d.tokens, d.q, parents)

    def update(self, state, out, p, accepted):
        self.inner.update(state, out, p, accepted)

    def reorder(self, rows):
        self.inner.reorder(rows)

    def keep_path(self, columns):
        pass  # the inner drafter wrote its own chain at chain slots


@pytest.mark.parametrize("rule", ["exact", "lantern", "typical"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_chain_as_tree_is_the_chain(target, small_draft, case, rule, temperature):
    """The same drafts, uniforms and rule give the same tokens and steps through the tree path."""
    sampling = SamplingConfig(temperature=temperature)
    params = RULES[rule]
    chain = SpeculativeDecoder(target, DraftModelDrafter(small_draft, window=3), rule, sampling, **params)
    tree = SpeculativeDecoder(target, AsTree(DraftModelDrafter(small_draft, window=3)), rule, sampling, **params)
    seeds = range(5, 5 + len(PROMPTS))
    a, b = chain.generate(case[0], NEW_TOKENS, seeds=seeds), tree.generate(case[0], NEW_TOKENS, seeds=seeds)
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.stats.accept_step, b.stats.accept_step)


@pytest.mark.parametrize("rule", ["exact", "greedy", "lantern"])
@pytest.mark.parametrize("shape, budget", [("3x3x3x3", 10), ("2x2x2", 1), ("4x2x2x2x2", 40)])
def test_dynamic_tree_is_greedy_ar(target, small_draft, case, rule, shape, budget):
    """EAGLE-2-style trees: every sample grows its own tree by the draft's confidence, within the budget."""
    (prompt, ar_tokens), drafter = case, DraftModelDrafter(small_draft, tree=shape, budget=budget)
    out = SpeculativeDecoder(target, drafter, rule, GREEDY, **RULES[rule]).generate(prompt, NEW_TOKENS)
    assert torch.equal(out.tokens, ar_tokens)
