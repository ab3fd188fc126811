"""Every bad input fails early with a ValueError that names the offending parameter."""

from __future__ import annotations

import pytest
import torch

from mmaccel import (
    CFGModel,
    DraftModelDrafter,
    JacobiDrafter,
    SamplingConfig,
    SpeculativeDecoder,
    make_drafter,
    make_rule,
)
from mmaccel.acceptance import GSDRule, LanternRule, TypicalRule, nearest_neighbours
from mmaccel.drafting import DraftHeads, MultiHeadDrafter
from mmaccel.models import TokenPrompt

V = 64  # the tiny target's vocabulary


@pytest.fixture(scope="module")
def emb():
    return torch.randn(V, 8)


@pytest.fixture(scope="module")
def prompt():
    return TokenPrompt.from_lists([[1, 2, 3], [4, 5]])


def test_unknown_rule(target):
    with pytest.raises(ValueError, match="rule 'nope'"):
        make_rule("nope")
    with pytest.raises(ValueError, match="rule 'nope'"):
        SpeculativeDecoder(target, JacobiDrafter(2), rule="nope")


def test_unknown_drafter():
    with pytest.raises(ValueError, match="drafter 'nope'"):
        make_drafter("nope")
    with pytest.raises(ValueError, match="windw"):
        make_drafter("jacobi", window=2, windw=3)  # a misspelt parameter is reported, not ignored


@pytest.mark.parametrize("window", [0, -1, 2.5])
def test_window_below_one(small_draft, window):
    with pytest.raises(ValueError, match="window"):
        JacobiDrafter(window=window)
    with pytest.raises(ValueError, match="window"):
        DraftModelDrafter(small_draft, window=window)
    with pytest.raises(ValueError, match="window"):
        make_drafter("jacobi", window=window)


def test_heads_need_at_least_one_head():
    with pytest.raises(ValueError, match="window"):
        MultiHeadDrafter(DraftHeads(8, V, num_heads=0))


@pytest.mark.parametrize("k", [V, V + 1, 10_000])
def test_lantern_k_not_below_vocabulary(emb, k):
    with pytest.raises(ValueError, match="k must"):
        LanternRule(emb, k=k)
    with pytest.raises(ValueError, match="k must"):
        make_rule("lantern", emb, k=k)
    with pytest.raises(ValueError, match="k must"):
        nearest_neighbours(emb, k)


@pytest.mark.parametrize("delta", [0.0, -0.1, 1.01, 5.0])
def test_lantern_delta_outside_unit_interval(emb, delta):
    with pytest.raises(ValueError, match="delta"):
        LanternRule(emb, k=4, delta=delta)
    with pytest.raises(ValueError, match="delta"):
        make_rule("lantern", emb, k=4, delta=delta)


@pytest.mark.parametrize("lam", [1.0, 0.5, 0.0, -2.0])
def test_lantern_lam_not_above_one(emb, lam):
    with pytest.raises(ValueError, match="lam"):
        LanternRule(emb, k=4, lam=lam)
    with pytest.raises(ValueError, match="lam"):
        make_rule("lantern++", emb, k=4, lam=lam)


def test_lantern_valid_bounds_are_accepted(emb):
    # The edges of the valid ranges build (so the checks above are not rejecting everything).
    LanternRule(emb, k=V - 1, delta=1.0)
    LanternRule(emb, k=1, lam=1.0001)


@pytest.mark.parametrize("top_p", [0.0, -0.5, 1.5])
def test_top_p_outside_unit_interval(top_p):
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=top_p)


def test_other_sampling_parameters():
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        SamplingConfig(top_k=0)
    SamplingConfig(temperature=0, top_k=1, top_p=1.0)


@pytest.mark.parametrize("rows", [V - 1, V + 10])
def test_embeddings_size_differs_from_vocabulary(target, rows):
    wrong = torch.randn(rows, 8)
    with pytest.raises(ValueError, match="embeddings"):
        SpeculativeDecoder(target, JacobiDrafter(2), rule="lantern", embeddings=wrong, k=4)
    with pytest.raises(ValueError, match="embeddings"):
        SpeculativeDecoder(target, JacobiDrafter(2), rule="gsd", embeddings=wrong)
    with pytest.raises(ValueError, match="embeddings"):
        SpeculativeDecoder(target, JacobiDrafter(2), rule=GSDRule(wrong))


def test_draft_model_vocabulary_differs(target, tiny_llama, prompt):
    other = tiny_llama(5, layers=1, hidden=16, vocab=V + 1)
    with pytest.raises(ValueError, match="draft model vocabulary"):
        SpeculativeDecoder(target, DraftModelDrafter(other, window=2))


def test_heads_vocabulary_differs(target, prompt):
    heads = DraftHeads(target.model.config.hidden_size, V + 3, num_heads=2)
    with pytest.raises(ValueError, match="heads vocabulary"):
        SpeculativeDecoder(target, MultiHeadDrafter(heads))


@pytest.mark.parametrize("scale", [-0.01, -3.0])
def test_negative_guidance_scale(target, scale):
    with pytest.raises(ValueError, match="scale"):
        CFGModel(target, scale)
    CFGModel(target, 0.0)  # zero is valid: the unconditional model


def test_unknown_rule_parameter(target, emb):
    with pytest.raises(ValueError, match="gamma"):
        make_rule("exact", gamma=0.5)
    with pytest.raises(ValueError, match="gamma"):
        make_rule("lantern", emb, k=4, gamma=0.5)
    with pytest.raises(ValueError, match="gamma"):
        SpeculativeDecoder(target, JacobiDrafter(2), rule="typical", gamma=0.5)
    with pytest.raises(ValueError, match="epsilon"):
        SpeculativeDecoder(target, JacobiDrafter(2), rule=TypicalRule(), epsilon=0.2)  # params with a built rule


def test_rule_parameter_ranges(emb):
    with pytest.raises(ValueError, match="epsilon"):
        TypicalRule(epsilon=0)
    with pytest.raises(ValueError, match="alpha"):
        TypicalRule(alpha=0)
    with pytest.raises(ValueError, match="group"):
        GSDRule(emb, group=0)
    with pytest.raises(ValueError, match="group"):
        GSDRule(emb, group=V + 1)
    with pytest.raises(ValueError, match="p_thr"):
        GSDRule(emb, p_thr=0)
    with pytest.raises(ValueError, match="d_thr"):
        GSDRule(emb, d_thr=0)
    with pytest.raises(ValueError, match="embeddings"):
        make_rule("lantern", None, k=4)


def test_generate_arguments(target, prompt):
    decoder = SpeculativeDecoder(target)
    with pytest.raises(ValueError, match="max_new_tokens"):
        decoder.generate(prompt, 0)
    with pytest.raises(ValueError, match="seeds"):
        decoder.generate(prompt, 4, seeds=[1, 2, 3])


def test_prompt_shapes():
    with pytest.raises(ValueError, match="prompt"):
        TokenPrompt(torch.tensor([1, 2, 3]), torch.tensor([3]))
    with pytest.raises(ValueError, match="prompt"):
        TokenPrompt(torch.tensor([[1, 2, 3]]), torch.tensor([4]))
    with pytest.raises(ValueError, match="prompt"):
        TokenPrompt(torch.tensor([[1, 2, 3]]), torch.tensor([0]))
