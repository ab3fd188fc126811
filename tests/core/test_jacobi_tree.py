"""Static trees over a Jacobi window: every node at a depth gets the window's guess there first, then more
children from its ``q``; the next window follows the accepted path and, past it, first children (the trail).

* the trail of a tree verdict continues the accepted path along first children, and ends at a leaf;
* the proposal: first children are the window's guesses, siblings differ from them, parents are the shape's;
* a one-child-per-depth tree decodes exactly as the chain does under sampling (tokens and forwards);
* greedy decoding with every shape, rule and coupling is AR's token for token, at batch 4 with different prompt
  lengths; a tree over a window accepts more per forward than the chain of the same depth at temperature 1;
* sampling: the sjd rule over a sampled Jacobi tree with maximal coupling follows the AR joint over 20,000 rows,
  and the same test catches siblings reported with an unnormalised ``q``;
* bad settings are refused by name.
"""

from __future__ import annotations

import pytest
import torch

from mmaccel import JacobiDrafter, SamplingConfig, SpeculativeDecoder
from mmaccel.acceptance import make_rule
from mmaccel.acceptance.tree import path_columns, verify_tree
from mmaccel.drafting import branch as branch_module
from mmaccel.drafting import jacobi
from mmaccel.methods import build_decoder
from mmaccel.models import TokenPrompt
from mmaccel.sampling import SampleRNG
from mmaccel.state import DecodeState, GenerationStats
from mmaccel.tree import TreeShape

from .test_lossless_greedy import GREEDY, NEW_TOKENS, PROMPTS, RULES
from .test_mc_sjd import CONFIGS, CONTROL_ALPHA, LOSSLESS_ALPHA, PROMPT, ROWS, ar_joint, pvalues_of, tables
from .test_mc_sjd import NEW_TOKENS as DRAWS

SHAPES = ["3x2x1", "2x1*3", "2x2x1x1", "1x1x1"]


def test_shape_runs_parse_and_print():
    assert TreeShape.parse("2x1*3").branching == (2, 1, 1, 1)
    assert TreeShape.parse("1*2x3x1*4").branching == (1, 1, 3, 1, 1, 1, 1)
    assert str(TreeShape.parse("4x2x2x1x1x1")) == "4x2x2x1*3"
    assert TreeShape.parse(str(TreeShape.parse("2x1*31"))) == TreeShape.parse("2x1*31")
    shape = TreeShape.parse("3x2x1")
    assert shape.node_depth.tolist() == [0, 0, 0] + [1] * 6 + [2] * 6
    assert shape.sibling_rank.tolist() == [0, 1, 2] + [0, 1] * 3 + [0] * 6
    for bad in ("2*", "2x1*0", "2x*3", "x"):
        with pytest.raises(ValueError, match="tree must look like"):
            TreeShape.parse(bad)


def test_trail_continues_the_accepted_path_along_first_children():
    """Greedy over 2x2x1 (nodes 0-1 at depth 1, 2-5 at depth 2, 6-9 at depth 3): sample 0 accepts node 1 then
    nothing, so its trail is 1, then 1's first child 4, then 4's child 8; sample 1 accepts nothing at all."""
    shape = TreeShape.parse("2x2x1")
    n, vocab = shape.nodes, 4
    tokens = torch.tensor([[0, 1, 0, 1, 0, 1, 0, 0, 0, 0], [0, 1, 0, 1, 0, 1, 0, 0, 0, 0]])
    p = torch.zeros(2, n + 1, vocab)
    p[..., 3] = 1.0  # the target's argmax is 3 everywhere ...
    p[0, 0] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # ... except at sample 0's root, which wants token 1 (node 1)
    q = torch.nn.functional.one_hot(tokens, vocab).float()
    parents = shape.parents.expand(2, -1)
    u = torch.full((2, n), 0.5)
    verdict = verify_tree(make_rule("greedy", None), p, q, tokens, parents, shape.depth, u, torch.full((2,), 0.5))
    assert verdict.accepted.tolist() == [1, 0]
    assert verdict.path.tolist() == [[1, -1, -1], [-1, -1, -1]]
    assert verdict.trail.tolist() == [[1, 4, 8], [0, 2, 6]]
    assert path_columns(verdict).tolist() == [[0, 2, 5, 9], [0, 1, 3, 7]]
    leafy = TreeShape.parse("2").parents.expand(2, -1)  # a one-level tree: the trail stops at the leaf
    verdict = verify_tree(make_rule("greedy", None), p[:, :3], q[:, :2], tokens[:, :2], leafy, 1, u[:, :2], u[:, 0])
    assert verdict.trail.tolist() == [[1], [0]]


def _state(batch: int, vocab: int) -> DecodeState:
    generated = torch.zeros(batch, 16, dtype=torch.long)
    return DecodeState(
        prompt=None,
        sampling=SamplingConfig(),
        rng=SampleRNG(list(range(batch)), torch.device("cpu")),
        vocab_size=vocab,
        max_length=32,
        generated=generated,
        count=torch.ones(batch, dtype=torch.long),
        last_pos=torch.ones(batch, dtype=torch.long),
        done=torch.zeros(batch, dtype=torch.bool),
        stats=GenerationStats(),
    )


@pytest.mark.parametrize("branch", ["top", "sample"])
def test_proposal_puts_the_guesses_first_and_distinct_siblings_after(branch):
    shape, vocab = TreeShape.parse("3x2x1"), 10
    drafter = JacobiDrafter(tree=str(shape), branch=branch)
    state = _state(2, vocab)
    drafter.begin(state, None)
    drafter.q = torch.softmax(torch.randn(2, 3, vocab, generator=torch.Generator().manual_seed(0)), -1)
    draft = drafter.propose(state)
    assert draft.tokens.shape == (2, shape.nodes) and draft.q.shape == (2, shape.nodes, vocab)
    assert torch.equal(draft.parents, shape.parents.expand(2, -1))
    first = shape.sibling_rank == 0
    assert torch.equal(draft.tokens[:, first], drafter.tokens[:, shape.node_depth[first]])
    assert torch.equal(draft.q[:, first], drafter.q[:, shape.node_depth[first]])
    for parent in range(-1, shape.nodes):  # siblings: distinct tokens, each q a distribution without the earlier
        kids = (shape.parents == parent).nonzero().flatten()
        if len(kids) > 1:
            assert draft.tokens[:, kids].unique(dim=1).shape[1] == len(kids)
            torch.testing.assert_close(draft.q[:, kids].sum(-1), torch.ones(2, len(kids)))
            second = draft.q[:, kids[1]].gather(-1, draft.tokens[:, kids[0], None])
            assert (second == 0).all()
    same_depth = shape.node_depth == 1  # every parent at a depth gets the same children
    assert (draft.tokens[:, same_depth].view(2, 3, 2) == draft.tokens[:, same_depth][:, None, :2]).all()


def test_a_chain_written_as_a_tree_decodes_as_the_chain(tiny_llama):
    target = tiny_llama(0, init=0.3)
    prompt = TokenPrompt.from_lists(PROMPTS)

    def run(**shape):
        drafter = JacobiDrafter(coupling="maximal", **shape)
        return SpeculativeDecoder(target, drafter, "sjd").generate(prompt, NEW_TOKENS, seeds=[5, 6, 7, 8])

    chain, tree = run(window=4), run(tree="1*4")
    assert torch.equal(chain.tokens, tree.tokens)
    assert torch.equal(chain.stats.steps_per_sample, tree.stats.steps_per_sample)


@pytest.fixture(scope="module")
def case(target):
    prompt = TokenPrompt.from_lists(PROMPTS)
    return prompt, SpeculativeDecoder(target, sampling=GREEDY).generate(prompt, NEW_TOKENS).tokens


@pytest.mark.parametrize("coupling", ["none", "maximal"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_jacobi_tree_is_greedy_ar(target, case, rule, shape, coupling):
    (prompt, ar_tokens), drafter = case, JacobiDrafter(tree=shape, coupling=coupling)
    out = SpeculativeDecoder(target, drafter, rule, GREEDY, **RULES[rule]).generate(prompt, NEW_TOKENS)
    assert torch.equal(out.tokens, ar_tokens)


@pytest.mark.parametrize("branch", ["top", "sample"])
def test_jacobi_tree_methods_are_greedy_ar(target, case, branch):
    prompt, ar_tokens = case
    for name in ("mc-sjd-tree", "lantern++-jacobi"):
        params = {"tree": "2x2x1*3", "branch": branch, **({"k": 8} if name == "lantern++-jacobi" else {})}
        decoder = build_decoder(target, name, params, sampling=GREEDY)
        assert decoder.drafter.tree is not None
        assert torch.equal(decoder.generate(prompt, NEW_TOKENS).tokens, ar_tokens)


def test_siblings_raise_acceptance_over_the_chain(tiny_llama):
    """The same window depth with a second child at every depth accepts more per forward (temperature 1)."""
    target = tiny_llama(0, init=0.3)
    prompt = TokenPrompt.from_lists(PROMPTS * 4)

    def forwards(**shape):
        drafter = JacobiDrafter(coupling="maximal", **shape)
        out = SpeculativeDecoder(target, drafter, "sjd", retire_below=0).generate(prompt, NEW_TOKENS)
        return out.stats.steps_per_sample.float().mean()

    assert forwards(tree="3x2x1x1") < forwards(window=4)


# ------------------------------------------------------------------------- sampling: the AR distribution
def jacobi_tree_samples(bigram_model, rows: int = ROWS):
    prompt = TokenPrompt(torch.tensor([PROMPT]).expand(rows, -1).clone(), torch.full((rows,), len(PROMPT)))
    drafter = JacobiDrafter(tree="2x2x1", branch="sample", coupling="maximal")
    decoder = SpeculativeDecoder(bigram_model(tables()), drafter, rule="sjd", sampling=CONFIGS["t1"])
    return decoder.generate(prompt, DRAWS, seeds=range(rows))


@pytest.mark.slow
def test_mc_sjd_over_a_jacobi_tree_follows_the_ar_distribution(bigram_model, chi2_pvalue):
    out = jacobi_tree_samples(bigram_model)
    second = out.stats.tokens_per_step[1]
    assert (second == 1).float().mean() > 0.05 and (second >= 2).float().mean() > 0.05  # both kinds of step
    pvalues = pvalues_of(out.tokens, ar_joint(tables(), CONFIGS["t1"]), chi2_pvalue)
    assert min(pvalues.values()) > LOSSLESS_ALPHA, pvalues


@pytest.mark.slow
def test_detector_fires_on_siblings_with_an_unnormalised_q(bigram_model, chi2_pvalue, monkeypatch):
    """The control: a sibling drawn from the rest of ``q`` but reported with that rest unnormalised, the bug the
    tree drafters once had (``tests/core/test_branch.py``)."""
    real = branch_module.branch_children

    def unnormalised(rest, k, branch, rng):
        tokens, _ = real(rest, k, branch, rng)
        return tokens, rest.repeat_interleave(k, 1)

    monkeypatch.setattr(jacobi, "branch_children", unnormalised)
    out = jacobi_tree_samples(bigram_model)
    pvalues = pvalues_of(out.tokens, ar_joint(tables(), CONFIGS["t1"]), chi2_pvalue)
    assert min(pvalues.values()) < CONTROL_ALPHA, pvalues


def test_bad_jacobi_tree_settings_are_refused(target):
    with pytest.raises(ValueError, match="branch"):
        JacobiDrafter(tree="2x1", branch="widest")
    with pytest.raises(ValueError, match="tree"):
        JacobiDrafter(tree="2xa")
    with pytest.raises(ValueError, match="auto"):
        build_decoder(target, "mc-sjd", {"window": "auto", "tree": "2x1"})
    drafter = JacobiDrafter(tree="2x1")
    with pytest.raises(ValueError, match="fixed shape"):
        drafter.resize(None, 4)
