"""Properties of the lossy rules: LANTERN's total-variation bound, GSD's dominance over the exact rule, and the
typical-acceptance formula. Each is checked against an independent loop-by-loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmaccel.acceptance import GSDRule, LanternRule, TypicalRule, make_rule, nearest_neighbours, residual_sample
from mmaccel.acceptance.base import rows_at
from mmaccel.sampling import sample

PROPERTY = settings(max_examples=60, deadline=None)


def random_case(seed: int, batch: int, window: int, vocab: int, dim: int, sparse: bool, sharp: float):
    """Target ``p`` ``[B, L+1, V]`` (maybe with zeros), draft ``q`` ``[B, L, V]`` (positive), drafts, embeddings."""
    g = torch.Generator().manual_seed(seed)
    logits = sharp * torch.randn(batch, window + 1, vocab, generator=g)
    if sparse:
        zero = torch.rand(batch, window + 1, vocab, generator=g) < 0.4
        zero[..., 0] = False  # keep one token alive per row
        logits = logits.masked_fill(zero, float("-inf"))
    p = logits.softmax(-1)
    q = (sharp * torch.randn(batch, window, vocab, generator=g)).softmax(-1)
    drafts = torch.randint(0, vocab, (batch, window), generator=g)
    emb = torch.randn(vocab, dim, generator=g)
    if vocab > 3:
        emb[1] = emb[2]  # a duplicated code: zero-distance neighbours must be handled
    return p, q, drafts, emb


case = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "batch": st.integers(1, 4),
        "window": st.integers(1, 4),
        "vocab": st.integers(3, 24),
        "dim": st.integers(1, 6),
        "sparse": st.booleans(),
        "sharp": st.sampled_from([0.3, 1.0, 3.0, 8.0]),
    }
)


def reference_relaxed(p: np.ndarray, x: int, neighbours: np.ndarray, bound: float) -> np.ndarray | None:
    """LANTERN's relaxed distribution, written as the paper states it: absorb neighbours, nearest first, while
    the absorbed mass stays within the bound. ``None`` when a partial sum sits within float32 error of the bound
    (float32 and float64 may then absorb different counts)."""
    relaxed = p.copy()
    absorbed = 0.0
    for n in neighbours:
        if abs(absorbed + p[n] - bound) < 1e-6:
            return None
        if absorbed + p[n] > bound:
            break
        absorbed += p[n]
        relaxed[n] = 0.0
    relaxed[x] += absorbed
    return relaxed


# ----------------------------------------------------------------------------------------------- LANTERN


@PROPERTY
@given(case=case, mode=st.sampled_from(["delta", "lam"]), level=st.floats(0.01, 1.0), k_frac=st.floats(0, 1))
def test_lantern_relaxed_distribution_stays_within_the_bound(case, mode, level, k_frac):
    p, q, drafts, emb = random_case(**case)
    vocab = case["vocab"]
    k = 1 + int(k_frac * (vocab - 2))
    params = {"delta": level} if mode == "delta" else {"lam": 1.0 + 4 * level}
    rule = LanternRule(emb, k=k, **params)
    p_draft = p[:, :-1]
    relaxed = rule.relaxed_probs(p_draft, drafts)
    p_x = p_draft.gather(-1, drafts[..., None]).squeeze(-1)
    bound = torch.full_like(p_x, level) if mode == "delta" else (params["lam"] - 1) * p_x

    # A distribution: non-negative and normalised.
    assert (relaxed >= 0).all()
    torch.testing.assert_close(relaxed.sum(-1), torch.ones_like(p_x), atol=1e-5, rtol=0)
    # Total variation to p never exceeds delta (additive) or (lam - 1) p(x) (multiplicative).
    tv = 0.5 * (relaxed - p_draft).abs().sum(-1)
    assert (tv <= bound + 1e-6).all(), (tv - bound).max()
    # And it is exactly the paper's construction (largest absorbed prefix of the k nearest neighbours).
    nbrs = nearest_neighbours(emb, k).numpy()
    for b, i in np.ndindex(*drafts.shape):
        x = int(drafts[b, i])
        expected = reference_relaxed(p_draft[b, i].double().numpy(), x, nbrs[x], float(bound[b, i]))
        if expected is not None:
            np.testing.assert_allclose(relaxed[b, i].numpy(), expected, atol=1e-5)


@PROPERTY
@given(case=case, level=st.floats(0.01, 1.0), lam=st.booleans())
def test_lantern_accepts_with_probability_min_one_relaxed_over_q(case, level, lam):
    p, q, drafts, emb = random_case(**case)
    rule = LanternRule(emb, k=case["vocab"] - 1, **({"lam": 1 + 3 * level} if lam else {"delta": level}))
    relaxed_x = rule.relaxed_probs(p[:, :-1], drafts).gather(-1, drafts[..., None]).squeeze(-1)
    q_x = q.gather(-1, drafts[..., None]).squeeze(-1)
    ratio = (relaxed_x / q_x).clamp(max=1.0)
    # The accept test is ``u < ratio``: it passes just below the ratio and fails just above it.
    below = (ratio * (1 - 1e-4)).clamp(min=0)
    above = ratio * (1 + 1e-4) + 1e-7
    assert rule.accept(p[:, :-1], q, drafts, below)[ratio > 1e-5].all()
    assert not rule.accept(p[:, :-1], q, drafts, above.clamp(max=1 - 1e-7))[ratio < 1 - 1e-3].any()
    # Relaxation only ever helps the draft, compared with the exact rule.
    exact_ratio = (p[:, :-1].gather(-1, drafts[..., None]).squeeze(-1) / q_x).clamp(max=1.0)
    assert (ratio >= exact_ratio - 1e-6).all()


@PROPERTY
@given(case=case)
def test_lantern_and_gsd_end_a_step_with_the_residual_draw(case):
    p, q, drafts, emb = random_case(**case)
    g = torch.Generator().manual_seed(case["seed"] + 1)
    u_accept, u_sample = torch.rand(drafts.shape, generator=g), torch.rand(drafts.shape[0], generator=g)
    for rule in (LanternRule(emb, k=case["vocab"] - 1, delta=0.2), GSDRule(emb, group=case["vocab"])):
        verdict = rule(p, q, drafts, u_accept, u_sample)
        torch.testing.assert_close(verdict.next_token, residual_sample(p, q, verdict.accepted, u_sample))


@PROPERTY
@given(vocab=st.integers(2, 30), dim=st.integers(1, 5), k_frac=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_nearest_neighbours_are_the_nearest(vocab, dim, k_frac, seed):
    emb = torch.randn(vocab, dim, generator=torch.Generator().manual_seed(seed))
    k = 1 + int(k_frac * (vocab - 2))
    nbrs = nearest_neighbours(emb, k, chunk=7).long()  # a small chunk exercises the chunked path
    dist = torch.cdist(emb, emb).fill_diagonal_(float("inf"))
    chosen = dist.gather(1, nbrs)
    assert (nbrs != torch.arange(vocab)[:, None]).all()
    assert (chosen[:, 1:] >= chosen[:, :-1]).all()  # nearest first
    others = dist.scatter(1, nbrs, float("inf")).fill_diagonal_(float("inf"))
    if k < vocab - 1:
        assert (chosen[:, -1] <= others.min(1).values + 1e-5).all()


# ----------------------------------------------------------------------------------------------- GSD


def reference_gsd_probability(rule: GSDRule, p: np.ndarray, q: np.ndarray, x: int) -> float | None:
    """GSD's acceptance probability, token by token: the ``group`` tokens with probability nearest ``p(x)``,
    kept when close in probability and in (unit-normalised) embedding space; ``max(P/Q, p(x)/q(x))`` capped at 1.
    ``None`` when a membership test sits within float32 error of its threshold (float64 may decide otherwise)."""
    emb = rule.embeddings.double().numpy()
    gap = np.abs(p - p[x])
    ranked = sorted(range(len(p)), key=lambda t: gap[t])
    if rule.group < len(p) and abs(gap[ranked[rule.group]] - gap[ranked[rule.group - 1]]) < 1e-6:
        return None
    members = [x]
    for t in ranked[: rule.group]:
        sq_dist = ((emb[t] - emb[x]) ** 2).sum()
        if t == x:
            continue
        if abs(gap[t] - rule.p_thr) < 1e-6 or abs(sq_dist - rule.d_thr) < 1e-5:
            return None
        if gap[t] < rule.p_thr and sq_dist < rule.d_thr:
            members.append(t)
    grouped = sum(p[t] for t in members) / sum(q[t] for t in members)
    return min(1.0, max(grouped, p[x] / q[x]))


gsd_params = st.fixed_dictionaries(
    {"group_frac": st.floats(0, 1), "p_thr": st.floats(0.01, 1.0), "d_thr": st.floats(0.05, 4.0)}
)


@PROPERTY
@given(case=case, params=gsd_params)
def test_gsd_accepts_at_least_as_often_as_the_exact_rule(case, params):
    p, q, drafts, emb = random_case(**{**case, "sparse": False})  # distinct probabilities: no ranking ties
    vocab = case["vocab"]
    group = 1 + int(params["group_frac"] * (vocab - 1))
    rule = GSDRule(emb, group=group, p_thr=params["p_thr"], d_thr=params["d_thr"])
    prob = rule.accept_probability(p[:, :-1], q, drafts)
    p_x = p[:, :-1].gather(-1, drafts[..., None]).squeeze(-1)
    q_x = q.gather(-1, drafts[..., None]).squeeze(-1)
    exact = (p_x / q_x).clamp(max=1.0)
    assert (prob >= exact - 1e-6).all()
    assert (prob <= 1).all()
    pd, qd = p[:, :-1].double().numpy(), q.double().numpy()
    for b, i in np.ndindex(*drafts.shape):
        expected = reference_gsd_probability(rule, pd[b, i], qd[b, i], int(drafts[b, i]))
        if expected is not None:
            assert math.isclose(float(prob[b, i]), expected, rel_tol=1e-4, abs_tol=1e-6)
    # ``accept`` is the test ``u < probability``.
    below = (prob * (1 - 1e-4)).clamp(min=0)
    assert rule.accept(p[:, :-1], q, drafts, below)[prob > 1e-5].all()
    assert not rule.accept(p[:, :-1], q, drafts, (prob * (1 + 1e-4) + 1e-7).clamp(max=1 - 1e-7))[prob < 0.999].any()


def test_gsd_is_strictly_more_permissive_than_exact():
    """Not secretly the exact rule: a draft whose near neighbour carries p-mass that q lacks gains acceptance."""
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [-1.0, 0.0]])
    rule = GSDRule(emb, group=2, p_thr=0.15, d_thr=0.5)
    p = torch.tensor([[[0.30, 0.35, 0.20, 0.15], [0.25, 0.25, 0.25, 0.25]]])
    q = torch.tensor([[[0.60, 0.05, 0.20, 0.15]]])
    drafts = torch.tensor([[0]])
    prob = float(rule.accept_probability(p[:, :1], q, drafts))
    assert math.isclose(prob, (0.30 + 0.35) / (0.60 + 0.05), rel_tol=1e-5)
    assert prob > 0.30 / 0.60 + 0.4
    # And on random inputs with the paper's defaults it is strictly larger a good part of the time.
    g = torch.Generator().manual_seed(0)
    vocab = 64
    emb = torch.randn(vocab, 2, generator=g)  # low dimension: many close codes
    p = torch.softmax(torch.randn(4096, 1, vocab, generator=g), -1)
    q = torch.softmax(torch.randn(4096, 1, vocab, generator=g), -1)
    x = sample(q, torch.rand(4096, 1, generator=g))
    rule = make_rule("gsd", emb)
    exact = (p.gather(-1, x[..., None]) / q.gather(-1, x[..., None])).squeeze(-1).clamp(max=1)
    assert (rule.accept_probability(p, q, x) > exact + 1e-3).float().mean() > 0.2


# ----------------------------------------------------------------------------------------------- typical


@PROPERTY
@given(case=case, epsilon=st.floats(0.01, 1.0), alpha=st.floats(0.01, 2.0))
def test_typical_acceptance_matches_its_formula(case, epsilon, alpha):
    p, q, drafts, _ = random_case(**case)
    rule = TypicalRule(epsilon=epsilon, alpha=alpha)
    g = torch.Generator().manual_seed(case["seed"] + 2)
    u_accept, u_sample = torch.rand(drafts.shape, generator=g), torch.rand(drafts.shape[0], generator=g)
    verdict = rule(p, q, drafts, u_accept, u_sample)

    pd = p.double().numpy()
    batch, window = drafts.shape
    for b in range(batch):
        expected_accepted = window
        for i in range(window):
            row = pd[b, i]
            entropy = -sum(v * math.log(v) for v in row if v > 0)
            threshold = min(epsilon, alpha * math.exp(-entropy))
            p_x = row[int(drafts[b, i])]
            if abs(p_x - threshold) < 1e-6:
                return  # on the boundary float32 and float64 may disagree; nothing to check here
            if not p_x > threshold:
                expected_accepted = i
                break
        assert int(verdict.accepted[b]) == expected_accepted
    # The step ends with a plain draw from p at the first failure (no residual correction: typical is lossy).
    torch.testing.assert_close(verdict.next_token, sample(rows_at(p, verdict.accepted), u_sample))


def test_typical_ignores_q():
    g = torch.Generator().manual_seed(5)
    p = torch.softmax(torch.randn(256, 4, 10, generator=g), -1)
    drafts = sample(p[:, :3], torch.rand(256, 3, generator=g))
    u, us = torch.rand(256, 3, generator=g), torch.rand(256, generator=g)
    rule = TypicalRule()
    a = rule(p, torch.softmax(torch.randn(256, 3, 10, generator=g), -1), drafts, u, us)
    b = rule(p, torch.full((256, 3, 10), 0.1), drafts, u, us)
    assert torch.equal(a.accepted, b.accepted) and torch.equal(a.next_token, b.next_token)
    assert a.accepted.float().mean() > 0.5  # drafts from p itself are mostly typical


@pytest.mark.parametrize("name", ["lantern", "gsd", "typical"])
def test_lossy_rules_are_not_marked_lossless(name):
    assert not make_rule(name, torch.randn(20, 3), **({"k": 5} if name == "lantern" else {})).lossless


def test_gsd_calibrates_its_distance_threshold_to_the_embedding_table():
    """With ``d_thr=None`` a typical token has about ``group`` embedding neighbours within reach, whatever the
    table's scale of distances: tight codebooks and spread-out token embeddings both get real clusters."""
    g = torch.Generator().manual_seed(0)
    for spread in (0.05, 0.6):  # near-duplicate codes / a GPT-like spread (nearest neighbour at cosine ~0.6)
        centres = torch.randn(64, 16, generator=g)
        emb = (centres[:, None] + spread * torch.randn(64, 16, 16, generator=g)).reshape(-1, 16)
        rule = GSDRule(emb, group=10)
        unit = torch.nn.functional.normalize(emb, dim=-1)
        sq = (2 - 2 * unit @ unit.T).fill_diagonal_(float("inf"))
        within = (sq < rule.d_thr).sum(-1).float()
        assert 6 <= float(within.median()) <= 14, (spread, rule.d_thr, float(within.median()))
    # An explicit threshold is kept as given.
    assert GSDRule(emb, d_thr=0.5).d_thr == 0.5
