"""The exact rule over a token tree (recursive rejection over siblings) keeps the AR distribution; a tree walk
that skips the residual update after a rejected sibling does not, and the same chi-square test sees it.

The real :class:`SpeculativeDecoder` drafts a static tree with a mismatched bigram draft model and verifies it on
the hand-made position-dependent bigram target over 20,000 rows at once (one seed each), as
``test_exact_distribution`` does for chains; every 3-token window of the output is compared with the exact AR
joint computed from the tables.
"""

from __future__ import annotations

import pytest

from mmaccel import DraftModelDrafter, SamplingConfig, SpeculativeDecoder
from mmaccel.acceptance import ExactRule
from mmaccel.models import TokenPrompt

from .test_exact_distribution import (
    CONFIGS,
    CONTROL_ALPHA,
    LOSSLESS_ALPHA,
    NEW_TOKENS,
    PROMPT,
    ROWS,
    ar_joint,
    tables,
    window_pvalues,
)

pytestmark = pytest.mark.slow
SHAPE = "3x1x1"  # three siblings at the root, then chains: rejections at the root and multi-token commits


class NoSiblingResidualRule(ExactRule):
    """The exact test at every sibling, but a rejected sibling leaves ``p`` as it was (no ``max(p - q, 0)``)."""

    name = "exact-without-sibling-residual"
    lossless = False
    residual = False


def generate(bigram_model, rule, branch: str, config: SamplingConfig):
    target_table, draft_table = tables()
    if branch == "dynamic":  # EAGLE-2 style: each row's own tree of the 5 most confident of 12 candidates
        drafter = DraftModelDrafter(bigram_model(draft_table), tree="3x3x1", budget=5)
    else:
        drafter = DraftModelDrafter(bigram_model(draft_table), tree=SHAPE, branch=branch)
    prompt = TokenPrompt.from_lists([PROMPT] * ROWS)
    out = SpeculativeDecoder(bigram_model(target_table), drafter, rule, config).generate(
        prompt, NEW_TOKENS, seeds=range(ROWS)
    )
    return out.tokens, out.stats.tokens_per_step


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("branch", ["sample", "top", "dynamic"])
def test_exact_tree_samples_follow_the_ar_distribution(bigram_model, chi2_pvalue, branch, config):
    tokens, per_step = generate(bigram_model, ExactRule(), branch, CONFIGS[config])
    first_step = per_step[0]
    assert (first_step == 1).float().mean() > 0.05  # some steps end at the root (every sibling rejected)
    deep = 2 if branch == "dynamic" else 3  # a 5-node budget keeps few paths of depth 2
    assert (first_step >= deep).float().mean() > 0.05  # and some commit a whole path
    pvalues = window_pvalues(tokens, ar_joint(tables()[0], CONFIGS[config], NEW_TOKENS), chi2_pvalue)
    assert min(pvalues.values()) > LOSSLESS_ALPHA, pvalues


def test_detector_fires_without_the_sibling_residual(bigram_model, chi2_pvalue):
    tokens, _ = generate(bigram_model, NoSiblingResidualRule(), "sample", CONFIGS["t1"])
    pvalues = window_pvalues(tokens, ar_joint(tables()[0], CONFIGS["t1"], NEW_TOKENS), chi2_pvalue)
    assert pvalues["tokens 0..2"] < CONTROL_ALPHA or pvalues["tokens 1..3"] < CONTROL_ALPHA, pvalues
