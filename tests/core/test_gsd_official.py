"""``gsd:variant=official``: GSD's acceptance probability as the authors' code computes it.

The reference below follows ``SpeculativeSampler.__call__`` of github.com/junhyukso/GSD (commit 4216c7c,
``scheduler/jacobi_iteration_lumina_mgpt.py``) line by line, loops, ``try``/``except`` and all, with the draft
and target rows aligned as this package aligns them (row ``i`` of ``p`` verifies draft ``i``).
"""

from __future__ import annotations

import pytest
import torch

from mmaccel import TokenPrompt
from mmaccel.acceptance import GSDRule, make_rule
from mmaccel.acceptance.gsd import calibrated_d_thr
from mmaccel.methods import build_decoder, describe_method, parse_method


def official_reference(advanced_logits, draft_prob, draft_tokens, emb, p_thr=0.15, d_thr=0.5, stable=False):
    """Acceptance probabilities ``[B, L]`` and which of them sit within float error of a threshold."""
    advanced_prob = advanced_logits.softmax(-1)
    a = emb
    head_img_sims = (torch.sum(a**2, dim=-1, keepdim=True) + torch.sum(a.T**2, dim=0, keepdim=True)) - 2 * a @ a.T
    B, L = draft_tokens.shape
    out = torch.zeros(B, L)
    near_threshold = torch.zeros(B, L, dtype=torch.bool)
    logit_sort = advanced_logits.sort(dim=-1, stable=stable).indices
    for b in range(B):
        for i in range(L):
            cls_idx = draft_tokens[b, i]
            sampled_advanced_prob = advanced_prob[b, i, cls_idx]
            sampled_draft_prob = draft_prob[b, i, cls_idx]
            cur_idx = torch.nonzero(logit_sort[b, i] == cls_idx)
            logit_sort_idx = logit_sort[b, i][cur_idx - 7 : cur_idx + 7]  # logit-based
            try:
                adv_super_prob = advanced_prob[b, i][logit_sort_idx]
                draft_super_prob = draft_prob[b, i][logit_sort_idx]
                gap = (adv_super_prob - advanced_prob[b, i][cls_idx]).abs()
                is_in_p_thr = (gap < p_thr).float()
                if logit_sort_idx.max().item() <= 10000:
                    is_in_d_thr = (head_img_sims[cls_idx][logit_sort_idx] < d_thr).float()
                    dist = head_img_sims[cls_idx][logit_sort_idx]
                    near_threshold[b, i] = bool(
                        ((dist - d_thr).abs() < 1e-4).any() | ((gap - p_thr).abs() < 1e-6).any()
                    )
                else:
                    is_in_d_thr = 1.0
                final_mask = (is_in_p_thr * is_in_d_thr).float()
                adv_super_prob = adv_super_prob * final_mask
                draft_super_prob = draft_super_prob * final_mask
                adv_super_prob = adv_super_prob.sum()
                draft_super_prob = draft_super_prob.sum()
                final_p = (adv_super_prob / draft_super_prob).clamp(max=1)
            except Exception:
                final_p = (sampled_advanced_prob / sampled_draft_prob).clamp(max=1)
            out[b, i] = final_p
    # ``r < final_p`` with a NaN (0/0: a window whose mask kept nothing, possible only when V < 14) never holds.
    return torch.nan_to_num(out, nan=0.0), near_threshold


def ranks_of(logits: torch.Tensor) -> torch.Tensor:
    """Each token's position in the stable ascending order of ``logits``."""
    order = logits.sort(dim=-1, stable=True).indices
    return torch.empty_like(order).scatter_(-1, order, torch.arange(logits.shape[-1]).expand_as(order))


def case(seed: int, vocab: int, dim: int, sharp: float, scale: float, window: int = 3, topk: int | None = None):
    """Target logits ``[B, L, V]`` with one row per draft rank (every rank ``0 .. V-1`` is drafted, so ranks
    below 7 and the top ranks are all covered), positive ``q``, drafts and raw embeddings."""
    g = torch.Generator().manual_seed(seed)
    logits = sharp * torch.randn(vocab, window, vocab, generator=g)
    if topk is not None:  # the -inf ties of a top-k: ranks among them are by token id
        kth = logits.topk(topk, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    q = (sharp * torch.randn(vocab, window, vocab, generator=g)).softmax(-1)
    order = logits.sort(dim=-1, stable=True).indices
    want = torch.arange(vocab)[:, None].expand(vocab, window)  # row b drafts the token of rank b
    drafts = order.gather(-1, want.unsqueeze(-1)).squeeze(-1)
    emb = scale * torch.randn(vocab, dim, generator=g)
    emb[1] = emb[2]  # a duplicated row: distance 0 to another token
    return logits, q, drafts, emb


CASES = [
    dict(seed=0, vocab=64, dim=2, sharp=1.0, scale=0.4),
    dict(seed=1, vocab=64, dim=4, sharp=3.0, scale=0.25),
    dict(seed=2, vocab=20, dim=3, sharp=0.5, scale=0.3),
    dict(seed=3, vocab=14, dim=2, sharp=2.0, scale=0.3),  # the smallest vocabulary where ranks < 7 are empty
    dict(seed=4, vocab=300, dim=8, sharp=1.0, scale=0.15, window=1),
    dict(seed=5, vocab=40, dim=2, sharp=1.0, scale=0.4, topk=12),
    dict(seed=6, vocab=10, dim=2, sharp=1.0, scale=0.4),  # below 14: Python's slice rules, followed to the letter
]


@pytest.mark.parametrize("spec", CASES)
def test_official_variant_matches_the_official_code_line_by_line(spec):
    logits, q, drafts, emb = case(**spec)
    p = logits.softmax(-1)
    rule = GSDRule(emb, variant="official")
    assert rule.d_thr == 0.5 and rule.p_thr == 0.15
    prob = rule.accept_probability(p, q, drafts)
    expected, near = official_reference(logits, q, drafts, emb, stable=spec.get("topk") is not None)
    assert prob.shape == drafts.shape and not near.all()
    torch.testing.assert_close(prob[~near], expected[~near], rtol=0, atol=1e-6)
    # What the case covers: drafts at ranks < 7 (exact fallback when V >= 14), the top ranks, and real groups.
    exact = (p.gather(-1, drafts[..., None]) / q.gather(-1, drafts[..., None])).squeeze(-1).clamp(max=1)
    rank = ranks_of(logits).gather(-1, drafts[..., None]).squeeze(-1)
    if spec["vocab"] >= 14:
        torch.testing.assert_close(prob[rank < 7], exact[rank < 7], rtol=0, atol=0)
    assert (rank >= spec["vocab"] - 7).any() and (rank < 7).any()
    assert ((prob - exact).abs() > 1e-3).any()  # the group changes some probabilities


def test_official_thresholds_can_be_set():
    logits, q, drafts, emb = case(seed=7, vocab=32, dim=3, sharp=1.0, scale=1.0)
    rule = make_rule("gsd", emb, variant="official", p_thr="0.3", d_thr="2.0")
    expected, near = official_reference(logits, q, drafts, emb, p_thr=0.3, d_thr=2.0)
    prob = rule.accept_probability(logits.softmax(-1), q, drafts)
    torch.testing.assert_close(prob[~near], expected[~near], rtol=0, atol=1e-6)


def test_ranks_below_seven_fall_back_to_the_exact_rule_and_rank_seven_does_not():
    vocab = 16
    logits = torch.arange(vocab, dtype=torch.float).mul(0.01).expand(1, 2, vocab).clone()  # rank = token id
    p = logits.softmax(-1)
    q = torch.full((1, 2, vocab), 0.045)  # ranks 8 .. 15
    q[..., :6], q[..., 6], q[..., 7] = 0.1, 0.02, 0.02
    emb = torch.zeros(vocab, 2)  # every token at distance 0: the whole window is the group
    drafts = torch.tensor([[6, 7]])
    prob = GSDRule(emb, variant="official").accept_probability(p, q, drafts)
    assert float(prob[0, 0]) == min(1.0, float(p[0, 0, 6] / 0.02)) == 1.0  # rank 6: the exact rule
    window = list(range(0, 14))  # rank 7: ranks 0 .. 13
    grouped = float(p[0, 1, window].sum() / q[0, 1, window].sum())
    assert float(prob[0, 1]) == pytest.approx(grouped, abs=1e-6) and grouped < 1
    # At the top the slice is cut at the vocabulary's end: the argmax's window is ranks V-8 .. V-1.
    q_top = torch.full((1, 1, vocab), 0.025)
    q_top[..., 8:] = 0.1
    top = float(GSDRule(emb, variant="official").accept_probability(p[:, :1], q_top, torch.tensor([[vocab - 1]])))
    assert top == pytest.approx(float(p[0, 0, 8:].sum() / 0.8), abs=1e-6) and top < 1


def test_official_variant_never_floors_at_the_drafts_own_ratio():
    vocab = 16
    logits = torch.linspace(-1, 1, vocab).expand(1, 1, vocab)
    p = logits.softmax(-1)
    x, y = 10, 9  # neighbours in rank; y close to x in embedding space, all others far
    q = torch.full((1, 1, vocab), (1 - 0.52) / (vocab - 2))
    q[0, 0, x], q[0, 0, y] = 0.02, 0.50
    emb = 10 * torch.eye(vocab)
    emb[y] = emb[x] + 0.1
    drafts = torch.tensor([[x]])
    official = float(GSDRule(emb, variant="official").accept_probability(p, q, drafts))
    big_p, big_q = float(p[0, 0, [x, y]].sum()), 0.52
    own = float(p[0, 0, x]) / 0.02
    assert big_p / big_q < own and official == pytest.approx(min(1.0, big_p / big_q), abs=1e-6)
    assert official < min(1.0, own) - 0.5
    # Today's rule on the same cluster floors at p(x)/q(x).
    assert float(GSDRule(emb, group=2, d_thr=0.5).accept_probability(p, q, drafts)) == pytest.approx(min(1.0, own))


def todays_probability(unit, group, p_thr, d_thr, p, q, drafts):
    """``GSDRule.accept_probability`` as it stood before the variants (frozen copy): the default must not move."""
    p_x = p.gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
    q_x = q.gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
    candidates = (p - p_x.unsqueeze(-1)).abs().topk(group, dim=-1, largest=False).indices
    sq_dist = (unit[candidates] - unit[drafts].unsqueeze(-2)).pow(2).sum(-1)
    close_p = (p.gather(-1, candidates) - p_x.unsqueeze(-1)).abs() < p_thr
    member = (close_p & (sq_dist < d_thr)) | (candidates == drafts.unsqueeze(-1))
    mass_p = (p.gather(-1, candidates) * member).sum(-1)
    mass_q = (q.gather(-1, candidates) * member).sum(-1)
    grouped = mass_p / mass_q.clamp_min(1e-30)
    return torch.maximum(grouped, p_x / q_x.clamp_min(1e-30)).clamp(max=1.0)


@pytest.mark.parametrize("params", [{}, {"group": 5, "p_thr": 0.3}, {"group": 20, "d_thr": 1.0}])
def test_mmaccel_variant_is_todays_rule(params):
    logits, q, drafts, emb = case(seed=8, vocab=48, dim=4, sharp=1.0, scale=1.0)
    p = logits.softmax(-1)
    default, named = GSDRule(emb, **params), GSDRule(emb, **params, variant="mmaccel")
    unit = torch.nn.functional.normalize(emb, dim=-1)
    group = params.get("group", 10)
    d_thr = params.get("d_thr", calibrated_d_thr(unit, group))
    assert default.d_thr == named.d_thr == d_thr and default.variant == "mmaccel"
    today = todays_probability(unit, group, params.get("p_thr", 0.15), d_thr, p, q, drafts)
    assert torch.equal(default.accept_probability(p, q, drafts), today)
    assert torch.equal(named.accept_probability(p, q, drafts), today)


def test_bad_variant_and_unused_group_are_refused():
    emb = torch.randn(20, 3)
    with pytest.raises(ValueError, match=r"variant of gsd must be one of mmaccel, official, got 'paper'"):
        GSDRule(emb, variant="paper")
    with pytest.raises(ValueError, match="variant of gsd must be one of"):
        make_rule("gsd", emb, variant="Official")
    with pytest.raises(ValueError, match="group of gsd is unused by variant='official'"):
        GSDRule(emb, group=5, variant="official")
    GSDRule(torch.randn(5, 3), variant="official")  # group's default needs no 10 tokens there


def test_official_variant_through_the_method_layer(target):
    assert parse_method("gsd:variant=official") == ("gsd", {"variant": "official"})
    assert "variant: str, default mmaccel (mmaccel (this rule) or official (the authors' code))" in describe_method(
        "gsd"
    )
    decoder = build_decoder(target, "gsd", {"variant": "official", "window": 4})
    assert isinstance(decoder.rule, GSDRule) and decoder.rule.variant == "official" and decoder.rule.d_thr == 0.5
    out = decoder.generate(TokenPrompt.from_lists([[1, 2, 3], [4, 5]]), 10, seeds=[0, 1])
    assert out.tokens.shape == (2, 10) and int(out.tokens.max()) < target.vocab_size and int(out.tokens.min()) >= 0
