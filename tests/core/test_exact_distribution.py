"""The exact rule (and SJD over Jacobi drafts) preserves the target distribution; dropping the residual
correction does not, and the test sees the difference.

The real :class:`SpeculativeDecoder` runs on a hand-made position-dependent bigram model (``p`` of the token at
``t + 1`` depends on the token at ``t`` and on ``t``) with a deliberately different bigram draft model, over
20,000 rows at once, one seed each. The joint distribution of consecutive generated tokens is compared with the
exact AR distribution computed analytically from the tables.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmaccel import DraftModelDrafter, JacobiDrafter, MultiHeadDrafter, SamplingConfig, SpeculativeDecoder
from mmaccel.acceptance import ExactRule, TypicalRule, make_rule
from mmaccel.acceptance.base import plain_sample
from mmaccel.drafting import DraftHeads
from mmaccel.models import TokenPrompt
from mmaccel.sampling import sample, target_probs

V = 6
WINDOW = 3
ROWS = 20_000
NEW_TOKENS = 6  # the first comes from the prompt's forward, the others from two or more speculative steps
PROMPT = [2, 5]
LOSSLESS_ALPHA = 1e-4  # seeds are fixed, so each test is deterministic; a lossless rule must not be rejected
CONTROL_ALPHA = 1e-8  # and a broken rule must be rejected overwhelmingly

pytestmark = pytest.mark.slow


class NoResidualRule(ExactRule):
    """The exact accept test but, on rejection, a fresh token from ``p`` instead of ``norm(max(p - q, 0))``."""

    name = "exact-without-residual"
    lossless = False

    def next_token(self, p, q, accepted, u_sample):
        return plain_sample(p, accepted, u_sample)


def tables():
    g = torch.Generator().manual_seed(1234)
    positions = len(PROMPT) + NEW_TOKENS + 2 * WINDOW + 4
    target = 1.5 * torch.randn(positions, V, V, generator=g)
    # A mismatched draft: its own random tables, sharper than the target's, so drafts are often rejected.
    draft = 2.5 * torch.randn(positions, V, V, generator=g)
    return target, draft


def ar_joint(table: torch.Tensor, config: SamplingConfig, n: int) -> torch.Tensor:
    """Exact joint distribution ``[V] * n`` of the first ``n`` generated tokens under plain AR sampling."""
    probs = target_probs(table, config).double()  # [T, V(prev), V(next)]
    start = len(PROMPT) - 1
    joint = probs[start, PROMPT[-1]]
    for i in range(1, n):
        joint = joint.unsqueeze(-1) * probs[start + i]  # ``[..., prev, 1] * [prev, next]``
    return joint


def _copy_last(context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    return context.gather(1, (index[:, :1] - 1).expand_as(index))


def generate(bigram_model, rule, drafter_kind: str, config: SamplingConfig) -> tuple[torch.Tensor, list]:
    target_table, draft_table = tables()
    target = bigram_model(target_table)
    if drafter_kind == "draft":
        drafter = DraftModelDrafter(bigram_model(draft_table), window=WINDOW)
    elif drafter_kind in ("heads", "heads-top", "heads-tail"):
        # Heads on the bigram model's "hidden state" (its logits row): q depends on the verify row that produced
        # the step's last token, so this checks that the drafter reads the right row.
        torch.manual_seed(0)
        tail = drafter_kind == "heads-tail"
        heads = DraftHeads(V, V, num_heads=WINDOW - 1 if tail else WINDOW)
        with torch.no_grad():
            for head in heads.heads:
                head[-1].weight.normal_(0, 1.0)
        # "heads-top": each head's most likely token, a one-hot q (Medusa's greedy candidates)
        # "heads-tail": two sampled head drafts, then a one-hot copy of the last one (a deterministic tail init)
        extra = dict(tail=_copy_last, tail_length=1) if tail else {}
        drafter = MultiHeadDrafter(heads, branch="top" if drafter_kind == "heads-top" else None, **extra)
    else:
        drafter = JacobiDrafter(window=WINDOW)
    prompt = TokenPrompt(torch.tensor([PROMPT]).expand(ROWS, -1).clone(), torch.full((ROWS,), len(PROMPT)))
    out = SpeculativeDecoder(target, drafter, rule=rule, sampling=config).generate(
        prompt, NEW_TOKENS, seeds=range(ROWS)
    )
    return out.tokens, out.stats.tokens_per_step


def window_pvalues(tokens: torch.Tensor, joint: torch.Tensor, chi2_pvalue, span: int = 3) -> dict[str, float]:
    """Chi-square p-values of the joint of every ``span`` consecutive generated tokens, and of each marginal."""
    n = tokens.shape[1]
    out = {}
    for start in range(n - span + 1):
        keep = tuple(range(start, start + span))
        expected = joint.sum(dim=tuple(i for i in range(n) if i not in keep))
        code = sum(tokens[:, i] * V ** (span - 1 - j) for j, i in enumerate(keep))
        counts = np.bincount(code.numpy(), minlength=V**span)
        out[f"tokens {start}..{start + span - 1}"] = chi2_pvalue(counts, expected.numpy())
    for i in range(n):
        expected = joint.sum(dim=tuple(j for j in range(n) if j != i))
        out[f"token {i}"] = chi2_pvalue(np.bincount(tokens[:, i].numpy(), minlength=V), expected.numpy())
    return out


CONFIGS = {
    "t1": SamplingConfig(),
    "t0.8-top3": SamplingConfig(temperature=0.8, top_k=3),  # zeros in p and q: residual and q(x) = 0 paths
}


# Greedy head drafts at t0.8-top3 never land in the bigram's top 3, so only t1 exercises their multi-token commits.
@pytest.mark.parametrize(
    "rule, drafter_kind, config",
    [(r, d, c) for r, d in [("exact", "draft"), ("sjd", "jacobi"), ("exact", "heads")] for c in CONFIGS]
    + [("exact", "heads-top", "t1"), ("exact", "heads-tail", "t1")],
)
def test_speculative_samples_follow_the_ar_distribution(bigram_model, chi2_pvalue, rule, drafter_kind, config):
    tokens, per_step = generate(bigram_model, rule, drafter_kind, CONFIGS[config])
    joint = ar_joint(tables()[0], CONFIGS[config], NEW_TOKENS)
    # The run must exercise both paths: rejections (residual draws) and multi-token commits.
    first_step = per_step[0]
    assert (first_step == 1).float().mean() > 0.05
    assert (first_step >= 2).float().mean() > 0.05
    if drafter_kind == "heads-tail":  # the one-hot tail draft itself gets accepted (1.25% of rows here)
        assert (first_step == WINDOW + 1).float().mean() > 0.005
    pvalues = window_pvalues(tokens, joint, chi2_pvalue)
    assert min(pvalues.values()) > LOSSLESS_ALPHA, pvalues


@pytest.mark.parametrize("broken", ["no-residual", "typical"])
def test_detector_fires_without_the_residual_correction(bigram_model, chi2_pvalue, broken):
    """Negative control: the same test rejects a rule that ends a rejected step with a draw from ``p``."""
    rule = NoResidualRule() if broken == "no-residual" else TypicalRule()
    tokens, _ = generate(bigram_model, rule, "draft", CONFIGS["t1"])
    joint = ar_joint(tables()[0], CONFIGS["t1"], NEW_TOKENS)
    pvalues = window_pvalues(tokens, joint, chi2_pvalue)
    assert pvalues["tokens 0..2"] < CONTROL_ALPHA or pvalues["tokens 1..3"] < CONTROL_ALPHA, pvalues


@pytest.mark.parametrize("window", [1, 3])
def test_rule_level_first_token_distribution(chi2_pvalue, window):
    """The rule alone, vectorised: draft ``x ~ q``, and the first output token (the draft if accepted, else the
    step's final token) is distributed as ``p`` at position 0 -- for many different (p, q) pairs at once."""
    g = torch.Generator().manual_seed(99)
    pairs, per_pair = 8, 25_000
    p0 = torch.softmax(1.5 * torch.randn(pairs, window + 1, V, generator=g), -1)
    q0 = torch.softmax(2.5 * torch.randn(pairs, window, V, generator=g), -1)
    p = p0.repeat_interleave(per_pair, 0)
    q = q0.repeat_interleave(per_pair, 0)
    b = p.shape[0]
    drafts = sample(q, torch.rand(b, window, generator=g))
    u_accept, u_sample = torch.rand(b, window, generator=g), torch.rand(b, generator=g)
    for rule, lossless in [(make_rule("exact"), True), (NoResidualRule(), False)]:
        verdict = rule(p, q, drafts, u_accept, u_sample)
        first = torch.where(verdict.accepted > 0, drafts[:, 0], verdict.next_token).view(pairs, per_pair)
        pvalues = [
            chi2_pvalue(np.bincount(first[i].numpy(), minlength=V), p0[i, 0].double().numpy()) for i in range(pairs)
        ]
        if lossless:
            assert min(pvalues) > LOSSLESS_ALPHA / pairs, pvalues
        else:
            assert min(pvalues) < CONTROL_ALPHA, pvalues


class TrigramModel:
    """A hand-made :class:`TokenModel` whose next-token logits depend on the position and the *two* tokens before
    it, so a draft's distribution ``q`` was computed from a context that may since have changed; it keeps the
    tokens it has seen per row (later writes at a position replace rejected drafts)."""

    def __init__(self, table: torch.Tensor):
        self.table = table.float()
        self.vocab_size = table.shape[-1]
        self.seen: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def new_cache(self, batch_size: int, max_length: int):
        from mmaccel.models import SlotCache

        self.seen = torch.zeros(batch_size, self.table.shape[0], dtype=torch.long)
        return SlotCache(max_length)

    def _logits(self, positions: torch.Tensor):
        from mmaccel.models import ModelOutput

        before = self.seen.gather(1, (positions - 1).clamp(min=0))
        return ModelOutput(self.table[positions, before, self.seen.gather(1, positions)], None)

    def forward(self, tokens, positions, cache, output_hidden: bool = False):
        self.seen.scatter_(1, positions, tokens)
        return self._logits(positions)

    def prefill(self, prompt, cache, output_hidden: bool = False):
        self.seen[:, : prompt.ids.shape[1]] = prompt.ids
        return self._logits((prompt.lengths - 1)[:, None])

    def reorder(self, cache, rows):  # per-row state beside the cache follows finished samples out of the batch
        self.seen = self.seen.index_select(0, rows)


def test_sjd_under_guidance_with_two_tokens_of_context_follows_the_ar_distribution(chi2_pvalue):
    """SJD over Jacobi drafts, classifier-free guidance (cond and uncond prompts differ), a model that reads two
    tokens back: every 3-token window of the output matches the exact guided AR joint."""
    from mmaccel.models import CFGModel
    from mmaccel.models.cfg import GuidedPrompt

    n, rows, scale = NEW_TOKENS, 40_000, 2.0
    table = 1.5 * torch.randn(20, V, V, V, generator=torch.Generator().manual_seed(7))
    cond, uncond = [1, 3, 2], [0, 0, 4]

    def step(i: int) -> torch.Tensor:
        """Guided next-token probabilities of generated token ``i``, indexed ``[x_{i-2}, x_{i-1}, next]``."""
        t = len(cond) - 1 + i
        grid = torch.arange(V)
        two_back = lambda ids: grid[:, None].expand(V, V) if i >= 2 else torch.full((V, V), ids[i - 2])  # noqa: E731
        one_back = lambda ids: grid[None, :].expand(V, V) if i >= 1 else torch.full((V, V), ids[-1])  # noqa: E731
        c = table[t, two_back(cond), one_back(cond)]
        u = table[t, two_back(uncond), one_back(uncond)]
        return torch.softmax((u + scale * (c - u)).double(), -1)

    # The exact joint of the n generated tokens, one factor at a time.
    joint = step(0)[0, 0]
    for i in range(1, n):
        probs = step(i)
        if i == 1:
            joint = joint[:, None] * probs[0, :, :]
        else:
            joint = joint[..., None] * probs.view(*([1] * (i - 2)), V, V, V)

    def prompt(ids):
        return TokenPrompt(torch.tensor([ids]).expand(rows, -1).clone(), torch.full((rows,), len(ids)))

    decoder = SpeculativeDecoder(CFGModel(TrigramModel(table), scale), JacobiDrafter(window=4), rule="sjd")
    out = decoder.generate(GuidedPrompt(prompt(cond), prompt(uncond)), n, seeds=range(rows))
    assert float(out.stats.mean_accepted_length) > 1.2  # drafts are accepted, so the test exercises them
    pvalues = window_pvalues(out.tokens, joint, chi2_pvalue)
    assert min(pvalues.values()) > LOSSLESS_ALPHA, pvalues
