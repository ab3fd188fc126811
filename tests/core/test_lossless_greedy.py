"""At temperature 0 every rule with every drafter reproduces plain greedy AR decoding token for token."""

from __future__ import annotations

import pytest
import torch

from mmaccel import DraftModelDrafter, JacobiDrafter, MultiHeadDrafter, SamplingConfig, SpeculativeDecoder
from mmaccel.acceptance import AcceptanceRule, make_rule
from mmaccel.drafting import DraftHeads
from mmaccel.models import TokenPrompt
from mmaccel.sampling import target_probs

GREEDY = SamplingConfig(temperature=0)
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [12, 13, 14, 15, 16]]  # different lengths on purpose
NEW_TOKENS = 24
WINDOW = 4
# Rule name and parameters: the tiny vocabulary (64) needs LANTERN's k below the default 1000.
RULES = {
    "exact": {},
    "greedy": {},
    "sjd": {},
    "typical": {},
    "lantern": {"k": 8, "delta": 0.3},
    "lantern++": {"k": 8, "lam": 3.0},
    "gsd": {"group": 8, "p_thr": 0.5, "d_thr": 2.0},  # generous clusters: a lax GSD still must not leak
}
DRAFTERS = ["jacobi", "draft_small", "draft_self", "heads"]


def make_drafter(kind: str, target, small_draft, window: int = WINDOW):
    if kind == "jacobi":
        return JacobiDrafter(window=window)
    if kind == "draft_small":
        return DraftModelDrafter(small_draft, window=window)
    if kind == "draft_self":
        return DraftModelDrafter(target, window=window)
    hf = target.model
    torch.manual_seed(3)
    heads = DraftHeads(hf.config.hidden_size, hf.config.vocab_size, num_heads=window)
    heads.init_from_output(hf.get_output_embeddings().weight)
    return MultiHeadDrafter(heads)


@pytest.fixture(scope="module")
def prompt():
    return TokenPrompt.from_lists(PROMPTS)


@pytest.fixture(scope="module")
def ar_tokens(target, prompt):
    return SpeculativeDecoder(target, sampling=GREEDY).generate(prompt, NEW_TOKENS).tokens


def test_ar_baseline_is_greedy_decoding(target, prompt, ar_tokens):
    """The baseline itself is right: argmax of a full, cache-free forward over prompt + generated tokens."""
    for row, ids in enumerate(PROMPTS):
        seq = list(ids)
        for _ in range(NEW_TOKENS):
            logits = target.model(input_ids=torch.tensor([seq])).logits[0, -1]
            seq.append(int(logits.argmax()))
        assert seq[len(ids) :] == ar_tokens[row].tolist()


@pytest.mark.parametrize("drafter_kind", DRAFTERS)
@pytest.mark.parametrize("rule", RULES)
def test_speculative_greedy_equals_ar(target, small_draft, prompt, ar_tokens, rule, drafter_kind):
    drafter = make_drafter(drafter_kind, target, small_draft)
    decoder = SpeculativeDecoder(target, drafter, rule=rule, sampling=GREEDY, **RULES[rule])
    out = decoder.generate(prompt, NEW_TOKENS, seeds=[7, 8, 9, 10])
    assert torch.equal(out.tokens, ar_tokens)

    stats = out.stats
    # Every token was committed by some forward, in order, and the step count matches the forwards.
    assert (stats.accept_step[:, 1:] >= stats.accept_step[:, :-1]).all()
    assert stats.nfe == int(stats.steps_per_sample.max())
    assert stats.nfe == 1 + len(stats.tokens_per_step)
    if drafter_kind == "draft_self":
        # The target drafting for itself is always right: every step commits the whole window plus the bonus
        # token, which exercises multi-token commits and the cache bookkeeping after full acceptance.
        per_step = torch.stack(stats.tokens_per_step)
        assert (per_step[:-1] == WINDOW + 1).all()
        expected_steps = 1 + -(-(NEW_TOKENS - 1) // (WINDOW + 1))
        assert stats.steps_per_sample.tolist() == [expected_steps] * len(PROMPTS)
        assert stats.mean_accepted_length > 3.5


def test_some_drafters_commit_several_tokens_per_step(target, small_draft, prompt):
    """Step compression is real beyond the self-drafting case: Jacobi or heads commit > 1 token on some step."""
    best = {}
    for kind in ("jacobi", "heads"):
        out = SpeculativeDecoder(target, make_drafter(kind, target, small_draft), sampling=GREEDY).generate(
            prompt, NEW_TOKENS
        )
        best[kind] = int(torch.stack(out.stats.tokens_per_step).max())
    assert max(best.values()) > 1, best


@pytest.mark.parametrize("rule", [r for r in RULES if r not in ("greedy",)])
def test_rules_reduce_to_greedy_matching_on_one_hot_p(rule):
    """Rule level: with one-hot ``p`` (temperature 0) every rule accepts exactly the drafts equal to the argmax
    and ends with the argmax, whatever ``q`` and the uniforms are."""
    g = torch.Generator().manual_seed(0)
    b, w, v = 2000, 4, 16
    p = target_probs(torch.randn(b, w + 1, v, generator=g), GREEDY)
    q = torch.softmax(3 * torch.randn(b, w, v, generator=g), -1)
    argmax = p.argmax(-1)[:, :w]
    # Drafts agree with the argmax most of the time, so long accepted runs and every cut point occur.
    agree = torch.rand(b, w, generator=g) < 0.75
    drafts = torch.where(agree, argmax, torch.randint(0, v, (b, w), generator=g))
    u_accept, u_sample = torch.rand(b, w, generator=g), torch.rand(b, generator=g)
    emb = torch.randn(v, 4, generator=g)
    expected = make_rule("greedy")(p, q, drafts, u_accept, u_sample)
    got = make_rule(rule, emb, **RULES[rule])(p, q, drafts, u_accept, u_sample)
    assert torch.equal(got.accepted, expected.accepted)
    assert torch.equal(got.next_token, expected.next_token)
    assert expected.accepted.unique().numel() == w + 1  # every prefix length occurred


@pytest.mark.parametrize("drafter_kind", DRAFTERS)
@pytest.mark.parametrize("new_tokens, window", [(1, 4), (2, 8), (7, 1), (7, 8)])
def test_short_generations_and_windows_longer_than_the_output(
    target, small_draft, prompt, drafter_kind, new_tokens, window
):
    ar = SpeculativeDecoder(target, sampling=GREEDY).generate(prompt, new_tokens)
    drafter = make_drafter(drafter_kind, target, small_draft, window)
    out = SpeculativeDecoder(target, drafter, rule="exact", sampling=GREEDY).generate(prompt, new_tokens)
    assert torch.equal(out.tokens, ar.tokens)
    assert out.stats.accept_step.shape == (len(PROMPTS), new_tokens)


class AcceptEverything(AcceptanceRule):
    """A broken rule: every draft passes."""

    def accept(self, p, q, drafts, u_accept):
        return torch.ones_like(drafts, dtype=torch.bool)


def test_detector_fires_on_a_lossy_rule(target, small_draft, prompt, ar_tokens):
    """Sanity check: the token comparison catches a rule that accepts wrong drafts."""
    drafter = make_drafter("draft_small", target, small_draft)
    out = SpeculativeDecoder(target, drafter, rule=AcceptEverything(), sampling=GREEDY).generate(prompt, NEW_TOKENS)
    assert not torch.equal(out.tokens, ar_tokens)
