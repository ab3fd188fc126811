"""MC-SJD's official code (junhyukso/SCD, ``SpeculativeSampler.__call__max`` / ``_call_maximal``) hands a redraft
that kept its old token over with the OLD ``q`` (``resampled_target_scores = draft_prob`` on accept), and only a
residual redraft with the new ``p``. :class:`~mmaccel.drafting.JacobiDrafter` hands every redraft over with
``p_new``, the kept token's marginal under the maximal coupling.

The official bookkeeping is not lossless: a token kept once is tested again against the same ``q_old`` at the next
verification, so tokens with ``q_old(x) > p(x)`` are thinned twice (for an initialised token, one-hot ``q``, the
output keeps it with probability ``p(x)**2`` instead of ``p(x)``). This test builds that bookkeeping on top of our
drafter and checks the chi-square of :mod:`tests.core.test_mc_sjd` tells it from AR sampling, which is what
``jacobi.py``'s docstring says about the difference. Windows start from a constant token: with uniformly random
initial tokens the official bias averages out over the initial token (by symmetry), with any other initialisation
(the spatial ones) it does not. The same constant initialisation is lossless with our bookkeeping: a lossless
drafter must be lossless whatever its initialisation proposes.
"""

from __future__ import annotations

import pytest
import torch

from mmaccel import JacobiDrafter, SamplingConfig, SpeculativeDecoder
from mmaccel.drafting.grid_init import VerticalRepeat
from mmaccel.models import TokenPrompt

from .test_mc_sjd import LOSSLESS_ALPHA, NEW_TOKENS, PROMPT, WINDOW, V, ar_joint, pvalues_of, tables

CONTROL_ALPHA = 1e-8
ROWS = 20_000


def constant_init(context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Every new window position starts as token 0 (a biased initialisation, one-hot ``q``)."""
    return torch.zeros_like(index)


#: Biased initialisations: a constant token, and the token above on a grid 2 tokens wide (``vertical``, the
#: image bench's best initialisation, which reads the window's own drafts).
INITS = {"constant": constant_init, "vertical": VerticalRepeat(V, width=2)}


class OfficialBookkeeping(JacobiDrafter):
    """Our maximal coupling, with the official code's ``q`` for the next verification: ``q_old`` where the old
    token was kept, ``p_new`` where the residual drew a new one."""

    def update(self, state, out, p, accepted):
        w, vocab = self.window, p.shape[-1]
        rows = accepted[:, None] + 1 + torch.arange(w)
        held = rows < w
        old_rows = rows.clamp(max=w - 1)
        old = self.tokens.gather(1, old_rows)
        q_old = self.q.gather(1, old_rows[..., None].expand(-1, -1, vocab))
        super().update(state, out, p, accepted)
        # The residual never draws the old token (it is 0 there unless the old token is always kept), so equal
        # tokens are exactly the kept ones.
        kept = held & (self.tokens == old)
        self.q = torch.where(kept[..., None], q_old, self.q)


def sample_rows(bigram_model, drafter: JacobiDrafter):
    config = SamplingConfig()
    prompt = TokenPrompt(torch.tensor([PROMPT]).expand(ROWS, -1).clone(), torch.full((ROWS,), len(PROMPT)))
    decoder = SpeculativeDecoder(bigram_model(tables()), drafter, rule="sjd", sampling=config)
    return decoder.generate(prompt, NEW_TOKENS, seeds=range(ROWS)).tokens, ar_joint(tables(), config)


@pytest.mark.slow
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("coupling", ["maximal", "gumbel"])
def test_coupled_sjd_is_lossless_from_biased_initialisations(bigram_model, chi2_pvalue, init, coupling):
    tokens, joint = sample_rows(bigram_model, JacobiDrafter(WINDOW, init=INITS[init], coupling=coupling))
    pvalues = pvalues_of(tokens, joint, chi2_pvalue)
    assert min(pvalues.values()) > LOSSLESS_ALPHA, pvalues


@pytest.mark.slow
@pytest.mark.parametrize("init", INITS)
def test_official_q_bookkeeping_is_detected(bigram_model, chi2_pvalue, init):
    tokens, joint = sample_rows(bigram_model, OfficialBookkeeping(WINDOW, init=INITS[init], coupling="maximal"))
    pvalues = pvalues_of(tokens, joint, chi2_pvalue)
    assert min(pvalues.values()) < CONTROL_ALPHA, pvalues
