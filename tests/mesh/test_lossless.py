"""Greedy decoding with every lossless mesh method is token-identical to plain AR, at batch >= 2 with different
prompt lengths (prefix faces), with and without guidance, with the structure mask (mmaccel.mesh.grammar) on and
off; the mask is part of the target, so it changes AR and speculation alike; xspec with relaxed rules runs and
stays in range."""

import numpy as np
import pytest
import torch

from mmaccel.mesh.data import make_shape
from mmaccel.mesh.methods import parse_mesh_method
from mmaccel.mesh.pipeline import MeshARPipeline
from mmaccel.mesh.tokenizer import TOKENS_PER_FACE, decode, encode


@pytest.fixture(scope="module")
def pipe(model_dir):
    return MeshARPipeline.from_pretrained(model_dir)


def _prefixes():
    box, _ = decode(encode(make_shape("box", np.random.default_rng(0)))[: 2 * TOKENS_PER_FACE], _vocab())
    return [None, box, None]


def _vocab():
    from mmaccel.mesh.tokenizer import MeshVocab

    return MeshVocab(128, 9)


def _run(pipe, spec, **kwargs):
    name, params = parse_mesh_method(spec)
    return pipe([4, 0, 2], method=name, seed=3, progress=False, max_faces=2, prefix=_prefixes(), **kwargs, **params)


SPECS = [
    "sjd",
    "sjd:init=face",
    "mc-sjd:init=face",
    "sjd:window=3:init=face",
    "xspec",
    "xspec:mask=false",
    "xspec:rule=sjd",
    "xspec:branch=top",  # a chain of each head's most likely token
    "xspec:tree=2x2x1",  # Medusa's static tree from the heads: the mask then works node by node
    "xspec:tree=3x1x1:branch=sample",
    "xspec:tail=4",  # the heads' chain extended by face-structure copies (one-hot drafts)
    "xspec:branch=top:tail=6",
]


# The mask on (the default) with and without guidance; off with guidance (the harder case: two rows per sample).
@pytest.mark.parametrize(
    "spec,guidance,structure_mask",
    [(s, g, True) for s in SPECS for g in (1.0, 2.0)] + [(s, 2.0, False) for s in SPECS],
)
def test_greedy_lossless_methods_match_ar(pipe, spec, guidance, structure_mask):
    ar = _run(pipe, "ar", temperature=0.0, guidance_scale=guidance, structure_mask=structure_mask)
    out = _run(pipe, spec, temperature=0.0, guidance_scale=guidance, structure_mask=structure_mask)
    assert torch.equal(out.tokens, ar.tokens)
    assert all(s["steps"] <= a["steps"] for s, a in zip(out.stats, ar.stats))
    assert all(s["structure_mask"] is structure_mask for s in out.stats)


@pytest.mark.parametrize("spec", ["xspec", "xspec:mask=false", "xspec:rule=sjd", "xspec:tree=2x2x1", "xspec:tail=4"])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_hinted_heads_match_ar_greedily(hinted_model_dir, spec, guidance):
    """Heads that read the face-structure copy of their token (``hint.weight`` in the heads file) are found by
    the pipeline, drafted with the face copy as their hint, and stay lossless."""
    from mmaccel.mesh.face_init import FaceInit
    from mmaccel.mesh.methods import build_mesh_decoder

    hinted = MeshARPipeline.from_pretrained(hinted_model_dir)
    assert hinted.heads.hinted
    name, params = parse_mesh_method(spec)
    decoder = build_mesh_decoder(hinted.model, name, params, heads=hinted.heads, eos=hinted.model.vocab.eos)
    assert isinstance(decoder.drafter.hint, FaceInit)
    ar = _run(hinted, "ar", temperature=0.0, guidance_scale=guidance)
    out = _run(hinted, spec, temperature=0.0, guidance_scale=guidance)
    assert torch.equal(out.tokens, ar.tokens)
    assert all(s["steps"] <= a["steps"] for s, a in zip(out.stats, ar.stats))


@pytest.mark.parametrize("spec", ["ar", "sjd:init=face", "xspec"])
def test_the_structure_mask_applies_to_ar_and_speculation_alike(pipe, spec):
    """The tiny random model writes garbage unmasked; masked, every method's output keeps the layout's grammar
    and sort order, and greedy outputs differ from the unmasked ones (the mask is really in the target)."""
    masked = _run(pipe, spec, temperature=1.0, structure_mask=True)
    for report in masked.reports:  # a mesh cut at the face budget keeps the one token past it
        assert report.bad_tokens == 0 and report.out_of_order == 0
        assert report.trailing_tokens == (0 if report.ended else 1)
    greedy = [_run(pipe, spec, temperature=0.0, structure_mask=m).tokens for m in (True, False)]
    assert not torch.equal(*greedy)
    unmasked = _run(pipe, spec, temperature=1.0, structure_mask=False)
    assert any(r.bad_tokens or r.trailing_tokens or r.out_of_order for r in unmasked.reports)


@pytest.mark.parametrize("spec", ["xspec:rule=typical", "xspec:rule=gsd", "gsd:init=face", "lantern:init=face"])
def test_relaxed_methods_run_and_report(pipe, spec):
    out = _run(pipe, spec, temperature=1.0)
    assert out.tokens.shape == (3, 2 * TOKENS_PER_FACE + 1)
    assert out.tokens.max() < pipe.model.vocab_size
    for s, steps in zip(out.stats, out.face_steps):
        assert 1 <= s["steps_to_end"] <= s["steps"] and len(steps) <= 2


def test_a_sample_is_the_same_alone_or_in_a_batch(pipe):
    both = pipe([1, 5], method="xspec", seed=0, progress=False, max_faces=2)
    alone = pipe([5], method="xspec", seed=1, progress=False, max_faces=2)
    assert torch.equal(both.tokens[1], alone.tokens[0])


def test_tree_histories_hold_each_nodes_own_path():
    from mmaccel.mesh.grammar import tree_histories

    history = torch.tensor([[7, 8, 9, 0, 0, 0]])
    # root (position 2), children a, b at position 3, a's child c at position 4
    tokens = torch.tensor([[9, 1, 2, 3]])
    positions = torch.tensor([[2, 3, 3, 4]])
    anc = torch.tensor([[[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]], dtype=torch.bool)
    out = tree_histories(history, tokens, positions, anc)
    assert out[0, 1].tolist() == [7, 8, 9, 1, 0, 0]
    assert out[0, 2].tolist() == [7, 8, 9, 2, 0, 0]  # its sibling's token is not in its history
    assert out[0, 3].tolist() == [7, 8, 9, 1, 3, 0]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("xspec:tree=2x2x2x2", "deep but there are only 3 heads"),
        ("xspec:branch=best", "branch"),
        ("xspec:tree=2y", "tree"),
        ("xspec:tree=2x1:tail=2", "tail"),
        ("xspec:tail=-1", "tail"),
    ],
)
def test_xspec_tree_bad_input_is_named(pipe, spec, match):
    with pytest.raises(ValueError, match=match):
        name, params = parse_mesh_method(spec)
        _run(pipe, spec)


def test_a_chain_of_top_drafts_is_the_one_path_tree_of_them(pipe):
    """``branch=top`` on a chain commits exactly what the tree ``1x1x1`` of top children does, sampled too: the
    chain path's one-hot ``q`` is the tree path's, without the tree's bookkeeping."""
    chain = _run(pipe, "xspec:branch=top", temperature=1.0)
    tree = _run(pipe, "xspec:tree=1x1x1", temperature=1.0)
    sampled = _run(pipe, "xspec", temperature=1.0)
    assert torch.equal(chain.tokens, tree.tokens)
    assert [s["steps"] for s in chain.stats] == [s["steps"] for s in tree.stats]
    assert not torch.equal(chain.tokens, sampled.tokens)  # the default chain samples its drafts
