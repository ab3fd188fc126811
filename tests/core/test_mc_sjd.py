"""Coupled Jacobi redrafting (MC-SJD's maximal coupling, and shared Gumbel noise) keeps SJD lossless.

* the pure coupling functions: the old token is kept with exactly ``min(1, p_new(x) / q_old(x))`` and the draw's
  marginal is ``p_new``; Gumbel-max with any noise is a sample of ``p``;
* greedy decoding with either coupling is AR's, token for token, in a batch of different prompt lengths;
* sampling: 20,000 rows of a hand-made position-dependent bigram model follow the exact AR joint, and the same test
  rejects a broken coupling that always keeps the old token;
* a sample is the same alone or in a batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmaccel import JacobiDrafter, SamplingConfig, SpeculativeDecoder
from mmaccel.drafting import jacobi
from mmaccel.drafting.coupling import gumbel_max, gumbel_noise, keep_probability, maximal_coupling
from mmaccel.methods import METHODS
from mmaccel.models import TokenPrompt
from mmaccel.sampling import sample, target_probs

V = 6
WINDOW = 3
ROWS = 20_000
NEW_TOKENS = 6
PROMPT = [2, 5]
LOSSLESS_ALPHA = 1e-4  # seeds are fixed, so each test is deterministic
CONTROL_ALPHA = 1e-8
COUPLINGS = ("maximal", "gumbel")
CONFIGS = {
    "t1": SamplingConfig(),
    "t0.8-top3": SamplingConfig(temperature=0.8, top_k=3),  # zeros in p and q: empty residuals, log 0
}


def test_unknown_coupling_names_the_parameter():
    with pytest.raises(ValueError, match=r"coupling must be one of 'none', 'maximal', 'gumbel', got 'spiral'"):
        JacobiDrafter(4, coupling="spiral")
    assert JacobiDrafter(4).coupling == "none"


def test_mc_sjd_is_a_jacobi_method_with_the_sjd_rule():
    assert (METHODS["mc-sjd"].drafter, METHODS["mc-sjd"].rule) == ("jacobi", "sjd")


def _pairs(n: int, seed: int, sharp: float = 2.0):
    """``n`` random (p, q) pairs over V tokens, some q one-hot (an initialised token's q), some with zeros."""
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(sharp * torch.randn(n, V, generator=g), -1)
    q = torch.softmax(sharp * torch.randn(n, V, generator=g), -1)
    q[: n // 4] = torch.nn.functional.one_hot(torch.randint(V, (n // 4,), generator=g), V).float()
    p[n // 4 : n // 2, 0] = 0  # a token p_new excludes (top-k)
    p = p / p.sum(-1, keepdim=True)
    return p, q, g


def test_keep_probability_is_the_maximal_coupling_formula():
    p, q, g = _pairs(64, 0)
    old = sample(q, torch.rand(64, generator=g))
    expected = torch.minimum(torch.ones(64), p[torch.arange(64), old] / q[torch.arange(64), old])
    assert torch.allclose(keep_probability(old, q, p), expected)
    one_hot = q[:16].argmax(-1)
    assert torch.allclose(keep_probability(one_hot, q[:16], p[:16]), p[torch.arange(16), one_hot])
    # The function keeps `old` for exactly that share of a uniform grid of u_keep (up to the grid's step).
    grid = (torch.arange(10_000) + 0.5) / 10_000
    kept = maximal_coupling(
        old[:, None].expand(-1, len(grid)),
        q[:, None].expand(-1, len(grid), -1),
        p[:, None].expand(-1, len(grid), -1),
        grid.expand(64, -1),
        torch.rand(64, len(grid), generator=g),
    )
    share = (kept == old[:, None]).double().mean(1)  # includes residual draws equal to old: none, p - q <= 0 there
    assert torch.allclose(share, expected.double(), atol=1e-4)


def test_maximal_coupling_draws_from_p_new_and_agrees_as_often_as_possible(chi2_pvalue):
    """With ``old ~ q``: the coupled draw's marginal is ``p`` and ``P(new = old) = sum min(p, q)`` (maximal)."""
    pairs, per_pair = 12, 20_000
    p0, q0, g = _pairs(pairs, 1)
    p, q = p0.repeat_interleave(per_pair, 0), q0.repeat_interleave(per_pair, 0)
    old = sample(q, torch.rand(len(q), generator=g))
    new = maximal_coupling(old, q, p, torch.rand(len(q), generator=g), torch.rand(len(q), generator=g))
    new, old = new.view(pairs, per_pair), old.view(pairs, per_pair)
    pvalues = [chi2_pvalue(np.bincount(new[i].numpy(), minlength=V), p0[i].double().numpy()) for i in range(pairs)]
    assert min(pvalues) > LOSSLESS_ALPHA / pairs, pvalues
    agree = (new == old).double().mean(1)
    overlap = torch.minimum(p0, q0).sum(-1).double()
    assert torch.allclose(agree, overlap, atol=4.5 / per_pair**0.5), (agree, overlap)


def test_gumbel_max_with_shared_noise_is_exact_for_each_distribution(chi2_pvalue):
    """The same noise drives two different distributions: each draw alone follows its own ``p``."""
    pairs, per_pair = 12, 20_000
    p0, q0, g = _pairs(pairs, 2)
    noise = gumbel_noise(torch.rand(pairs * per_pair, V, generator=g))
    for probs in (p0, q0):
        draws = gumbel_max(probs.repeat_interleave(per_pair, 0), noise).view(pairs, per_pair)
        one_hot = (probs > 0).sum(-1) == 1
        assert torch.equal(draws[one_hot], probs[one_hot].argmax(-1, keepdim=True).expand(-1, per_pair))
        rest = (~one_hot).nonzero().flatten().tolist()
        pvalues = [chi2_pvalue(np.bincount(draws[i].numpy(), minlength=V), probs[i].double().numpy()) for i in rest]
        assert min(pvalues) > LOSSLESS_ALPHA / pairs, pvalues
    assert torch.isfinite(gumbel_noise(torch.tensor([0.0, 1 - 2**-24]))).all()  # a one-hot p is always drawn


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_greedy_coupled_sjd_is_ar(target, coupling):
    prompt = TokenPrompt.from_lists([[1, 2, 3, 4, 5], [7], [9, 10, 11], [20, 21]])
    greedy = SamplingConfig(temperature=0)
    ar = SpeculativeDecoder(target, None, sampling=greedy).generate(prompt, 24)
    decoder = SpeculativeDecoder(target, JacobiDrafter(window=5, coupling=coupling), rule="sjd", sampling=greedy)
    out = decoder.generate(prompt, 24, seeds=[3, 1, 4, 1])
    assert torch.equal(out.tokens, ar.tokens)
    assert int(out.stats.steps_per_sample.sum()) < int(ar.stats.steps_per_sample.sum())  # drafts were accepted


def tables() -> torch.Tensor:
    positions = len(PROMPT) + NEW_TOKENS + 2 * WINDOW + 4
    return 1.5 * torch.randn(positions, V, V, generator=torch.Generator().manual_seed(1234))


def ar_joint(table: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Exact joint ``[V] * NEW_TOKENS`` of the generated tokens under plain AR sampling of the bigram table."""
    probs = target_probs(table, config).double()
    start = len(PROMPT) - 1
    joint = probs[start, PROMPT[-1]]
    for i in range(1, NEW_TOKENS):
        joint = joint.unsqueeze(-1) * probs[start + i]
    return joint


def generate(bigram_model, coupling: str, config: SamplingConfig, rows: int = ROWS):
    prompt = TokenPrompt(torch.tensor([PROMPT]).expand(rows, -1).clone(), torch.full((rows,), len(PROMPT)))
    decoder = SpeculativeDecoder(
        bigram_model(tables()), JacobiDrafter(WINDOW, coupling=coupling), rule="sjd", sampling=config
    )
    return decoder.generate(prompt, NEW_TOKENS, seeds=range(rows))


def pvalues_of(tokens: torch.Tensor, joint: torch.Tensor, chi2_pvalue, span: int = 3) -> dict[str, float]:
    """Chi-square p-values of every ``span`` consecutive generated tokens' joint, and of each token alone."""
    n, out = tokens.shape[1], {}
    for start in range(n - span + 1):
        keep = range(start, start + span)
        expected = joint.sum(dim=tuple(i for i in range(n) if i not in keep))
        code = sum(tokens[:, i] * V ** (span - 1 - j) for j, i in enumerate(keep))
        out[f"tokens {start}..{start + span - 1}"] = chi2_pvalue(
            np.bincount(code.numpy(), minlength=V**span), expected.numpy()
        )
    for i in range(n):
        expected = joint.sum(dim=tuple(j for j in range(n) if j != i))
        out[f"token {i}"] = chi2_pvalue(np.bincount(tokens[:, i].numpy(), minlength=V), expected.numpy())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("coupling", COUPLINGS)
def test_coupled_sjd_samples_follow_the_ar_distribution(bigram_model, chi2_pvalue, coupling, config):
    out = generate(bigram_model, coupling, CONFIGS[config])
    first_step = out.stats.tokens_per_step[0]
    assert (first_step == 1).float().mean() > 0.05 and (first_step >= 2).float().mean() > 0.05
    pvalues = pvalues_of(out.tokens, ar_joint(tables(), CONFIGS[config]), chi2_pvalue)
    assert min(pvalues.values()) > LOSSLESS_ALPHA, pvalues


@pytest.mark.slow
def test_detector_fires_on_a_coupling_that_always_keeps_the_old_token(bigram_model, chi2_pvalue, monkeypatch):
    monkeypatch.setattr(jacobi, "maximal_coupling", lambda old, q_old, p_new, u_keep, u_draw: old)
    out = generate(bigram_model, "maximal", CONFIGS["t1"], rows=5_000)
    pvalues = pvalues_of(out.tokens, ar_joint(tables(), CONFIGS["t1"]), chi2_pvalue)
    assert min(pvalues.values()) < CONTROL_ALPHA, pvalues


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15, 16, 17], [18, 19], [20] * 6]
SEEDS = [101, 202, 303, 404, 505, 606]


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_coupled_sample_in_batch_equals_sample_alone(tiny_llama, coupling):
    target = tiny_llama(0, init=0.3)  # peaked: acceptance varies from sample to sample

    def run(prompts, seeds):
        decoder = SpeculativeDecoder(target, JacobiDrafter(window=4, coupling=coupling), rule="sjd")
        return decoder.generate(TokenPrompt.from_lists(prompts), 16, seeds=seeds)

    batch = run(PROMPTS, SEEDS)
    assert batch.stats.steps_per_sample.unique().numel() > 1  # samples advanced at their own paces
    for row, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS)):
        alone = run([prompt], [seed])
        assert torch.equal(alone.tokens[0], batch.tokens[row]), f"row {row} differs"
        assert torch.equal(alone.stats.accept_step[0], batch.stats.accept_step[row])
