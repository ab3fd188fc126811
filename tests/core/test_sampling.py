"""Logits processing (temperature, top-k, top-p) and seeded inverse-CDF sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmaccel.sampling import SampleRNG, SamplingConfig, sample, target_probs

PROPERTY = settings(max_examples=80, deadline=None)
LARGEST_UNIFORM = 1 - 2**-24  # the largest float32 that torch.rand can return

logits_case = st.fixed_dictionaries(
    {"seed": st.integers(0, 2**31 - 1), "rows": st.integers(1, 5), "vocab": st.integers(2, 40)}
)


def random_logits(seed: int, rows: int, vocab: int, scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed))


@PROPERTY
@given(case=logits_case)
def test_temperature_zero_is_one_hot_argmax(case):
    logits = random_logits(**case)
    probs = target_probs(logits, SamplingConfig(temperature=0, top_k=3, top_p=0.5))
    assert torch.equal(probs, torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float())


@PROPERTY
@given(case=logits_case, temperature=st.floats(0.05, 5.0))
def test_temperature_scales_logits(case, temperature):
    logits = random_logits(**case)
    probs = target_probs(logits.half(), SamplingConfig(temperature=temperature))
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, (logits.half().float() / temperature).softmax(-1), atol=1e-6, rtol=1e-5)


@PROPERTY
@given(case=logits_case, k_frac=st.floats(0, 1), temperature=st.floats(0.2, 3.0))
def test_top_k_keeps_the_k_largest(case, k_frac, temperature):
    logits = random_logits(**case)  # continuous: no ties
    vocab = logits.shape[-1]
    k = 1 + int(k_frac * (vocab - 1))
    probs = target_probs(logits, SamplingConfig(temperature=temperature, top_k=k))
    top = logits.topk(k, -1).indices
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top, True)
    assert ((probs > 0) == keep).all()
    expected = (logits / temperature).masked_fill(~keep, float("-inf")).softmax(-1)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)


def reference_top_p(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p``; renormalise."""
    out = np.zeros_like(probs)
    mass = 0.0
    for token in np.argsort(-probs, kind="stable"):
        out[token] = probs[token]
        mass += probs[token]
        if mass >= top_p:
            break
    return out / out.sum()


@PROPERTY
@given(case=logits_case, top_p=st.floats(0.01, 1.0), top_k=st.one_of(st.none(), st.integers(1, 40)))
def test_top_p_keeps_the_smallest_prefix_reaching_the_mass(case, top_p, top_k):
    logits = random_logits(**case, scale=2.0)
    probs = target_probs(logits, SamplingConfig(top_p=top_p, top_k=top_k))
    before = target_probs(logits, SamplingConfig(top_k=top_k))  # top-k then top-p, as in transformers
    for row in range(logits.shape[0]):
        p = before[row].double().numpy()
        expected = reference_top_p(p, top_p)
        # Where the mass of a prefix sits within float error of top_p the two may keep one token more or less.
        cumulative = np.sort(p)[::-1].cumsum()
        if np.abs(cumulative - top_p).min() < 1e-5:
            continue
        np.testing.assert_allclose(probs[row].numpy(), expected, atol=1e-5)
        kept = probs[row] > 0
        # Smallest: dropping the least likely kept token would fall short of top_p.
        assert float(before[row][kept].sum()) >= top_p - 1e-6
        assert float(before[row][kept].sum() - before[row][kept].min()) < top_p + 1e-6


def test_top_p_one_keeps_everything():
    logits = random_logits(0, 3, 10)
    torch.testing.assert_close(target_probs(logits, SamplingConfig(top_p=1.0)), logits.softmax(-1))


sparse_case = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "vocab": st.integers(1, 30),
        "zero_frac": st.floats(0, 0.95),
        "scale": st.sampled_from([1e-6, 1.0, 7.0]),  # unnormalised inputs are allowed
    }
)


@PROPERTY
@given(case=sparse_case, extra=st.lists(st.floats(0, LARGEST_UNIFORM, width=32), max_size=20))
def test_sample_never_picks_zero_probability_tokens(case, extra):
    g = torch.Generator().manual_seed(case["seed"])
    vocab = case["vocab"]
    probs = torch.rand(vocab, generator=g) * case["scale"]
    zero = torch.rand(vocab, generator=g) < case["zero_frac"]
    zero[int(torch.randint(0, vocab, (), generator=g))] = False  # keep one alive
    probs = probs.masked_fill(zero, 0.0)
    probs[~zero] = probs[~zero].clamp_min(1e-30)
    # Uniforms at the edges (0, the largest float32 below 1), right at the cdf steps, and random.
    cdf = probs.cumsum(0) / probs.sum()
    u = torch.cat(
        [
            torch.tensor([0.0, LARGEST_UNIFORM, *extra]),
            cdf.clamp(max=LARGEST_UNIFORM),
            torch.nextafter(cdf, torch.zeros(())).clamp(0, LARGEST_UNIFORM),
            torch.rand(200, generator=g),
        ]
    )
    tokens = sample(probs.expand(len(u), -1), u)
    assert (probs[tokens] > 0).all()
    # Inverse CDF: the token is non-decreasing in u.
    order = u.argsort()
    assert (tokens[order][1:] >= tokens[order][:-1]).all()


def test_sample_matches_the_distribution(chi2_pvalue):
    g = torch.Generator().manual_seed(7)
    vocab, draws = 12, 60_000
    probs = torch.rand(vocab, generator=g) ** 3
    probs[[2, 7]] = 0.0
    tokens = sample(probs.expand(draws, -1), torch.rand(draws, generator=g))
    counts = np.bincount(tokens.numpy(), minlength=vocab)
    assert counts[[2, 7]].sum() == 0
    assert chi2_pvalue(counts, probs.double().numpy()) > 1e-4
    # The detector fires on a slightly different distribution: 3% of the mass moved between two tokens.
    wrong = probs / probs.sum()
    wrong[0] += 0.03
    wrong[wrong.argmax()] -= 0.03
    assert chi2_pvalue(counts, wrong.double().numpy()) < 1e-6


def test_sample_rng_is_per_sample():
    rng_a = SampleRNG([3, 11, 5])
    rng_b = SampleRNG([11])
    for shape in [(4,), (2, 3), (1,)]:
        a, b = rng_a.uniform(*shape), rng_b.uniform(*shape)
        assert a.shape == (3, *shape)
        assert torch.equal(a[1], b[0])
        assert ((a >= 0) & (a < 1)).all()
    assert not torch.equal(a[0], a[2])
    reference = torch.Generator().manual_seed(5)
    fresh = SampleRNG([5])
    assert torch.equal(fresh.uniform(6)[0], torch.rand(6, generator=reference))


@pytest.mark.parametrize("bad", [{"temperature": -0.1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.2}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingConfig(**bad)
