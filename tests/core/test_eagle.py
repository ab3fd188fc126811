"""The EAGLE drafter: greedy decoding equals AR with every rule, the exact rule over its drafts keeps the AR
distribution (chi-square over 20,000 draws, with a broken drafter the test catches), and bad heads are refused."""

from __future__ import annotations

import pytest
import torch

from mmaccel import SamplingConfig, SpeculativeDecoder
from mmaccel.drafting import EagleConfig, EagleDrafter, EagleHead, load_eagle, save_eagle
from mmaccel.drafting.base import Draft
from mmaccel.methods import build_decoder
from mmaccel.models import TokenPrompt

from .test_exact_distribution import (
    CONTROL_ALPHA,
    LOSSLESS_ALPHA,
    PROMPT,
    ROWS,
    V,
    ar_joint,
    tables,
    window_pvalues,
)
from .test_exact_distribution import (
    NEW_TOKENS as DRAWS,
)

GREEDY = SamplingConfig(temperature=0)
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [12, 13, 14, 15, 16]]  # different lengths on purpose
NEW_TOKENS = 24
WINDOW = 4
RULES = {"exact": {}, "greedy": {}, "typical": {}, "lantern": {"k": 8, "delta": 0.3}}


def head_for(hf, seed: int = 3) -> EagleHead:
    """A random EAGLE head bound to a tiny Hugging Face Llama."""
    torch.manual_seed(seed)
    c = hf.config
    config = EagleConfig(c.hidden_size, c.vocab_size, c.num_attention_heads, c.intermediate_size)
    return EagleHead(config).bind(hf.get_input_embeddings(), hf.get_output_embeddings())


def copying_target(tiny_llama):
    """A one-layer tiny Llama with its attention switched off: its next token is a function of the current one,
    which an EAGLE head can compute exactly (fc passes the embedding, the head's MLP is the target's, and the
    final norm's unit weights only rescale the logits) -- every draft is accepted."""
    target = tiny_llama(5, layers=1)
    hf = target.model
    layer = hf.model.layers[0]
    head = head_for(hf)
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        head.layer.self_attn.o_proj.weight.zero_()
        d = hf.config.hidden_size
        head.fc.weight.zero_()
        head.fc.bias.zero_()
        head.fc.weight[:, :d] = torch.eye(d)
        head.layer.mlp.load_state_dict(layer.mlp.state_dict())
        head.layer.post_attention_layernorm.load_state_dict(layer.post_attention_layernorm.state_dict())
    return target, head


@pytest.fixture(scope="module")
def prompt():
    return TokenPrompt.from_lists(PROMPTS)


@pytest.mark.parametrize("rule", RULES)
def test_greedy_eagle_equals_ar(target, prompt, rule):
    ar = SpeculativeDecoder(target, sampling=GREEDY).generate(prompt, NEW_TOKENS).tokens
    drafter = EagleDrafter(head_for(target.model), WINDOW)
    out = SpeculativeDecoder(target, drafter, rule=rule, sampling=GREEDY, **RULES[rule]).generate(prompt, NEW_TOKENS)
    assert torch.equal(out.tokens, ar)


@pytest.mark.parametrize("retire_below", [0.0, 0.75])
def test_greedy_eagle_with_every_draft_accepted_equals_ar(tiny_llama, prompt, retire_below):
    """Whole windows accepted: the drafter's slots and the engine's commits must stay in step."""
    target, head = copying_target(tiny_llama)
    ar = SpeculativeDecoder(target, sampling=GREEDY).generate(prompt, NEW_TOKENS).tokens
    out = SpeculativeDecoder(target, EagleDrafter(head, WINDOW), sampling=GREEDY, retire_below=retire_below).generate(
        prompt, NEW_TOKENS
    )
    assert torch.equal(out.tokens, ar)
    per_step = torch.stack(out.stats.tokens_per_step, 1)
    assert int(per_step.max()) == WINDOW + 1 and out.stats.nfe <= NEW_TOKENS // 2


def test_eagle_method_with_auto_window_equals_ar(target, prompt):
    ar = SpeculativeDecoder(target, sampling=GREEDY).generate(prompt, NEW_TOKENS).tokens
    for params in ({}, {"window": "auto"}):
        decoder = build_decoder(target, "eagle", params, sampling=GREEDY, eagle=head_for(target.model))
        assert torch.equal(decoder.generate(prompt, NEW_TOKENS).tokens, ar)


def test_a_sample_is_the_same_alone_or_in_a_batch(target, prompt):
    sampling = SamplingConfig(temperature=1.0)
    head = head_for(target.model)
    batch = SpeculativeDecoder(target, EagleDrafter(head, WINDOW), sampling=sampling)
    tokens = batch.generate(prompt, NEW_TOKENS, seeds=[7, 8, 9, 10]).tokens
    alone = TokenPrompt.from_lists(PROMPTS[1:2])
    assert torch.equal(batch.generate(alone, NEW_TOKENS, seeds=[8]).tokens[0], tokens[1])


# ------------------------------------------------------------------------- exact rule: the AR distribution
class UniformQDrafter(EagleDrafter):
    """Broken on purpose: drafts from the head but reports a uniform ``q``, so the exact rule over-accepts."""

    def propose(self, state) -> Draft:
        draft = super().propose(state)
        return Draft(draft.tokens, torch.full_like(draft.q, 1.0 / draft.q.shape[-1]))


def bigram_head() -> EagleHead:
    """A head over the bigram model's "hidden state" (its logits row, D = V), far from the target."""
    torch.manual_seed(11)
    head = EagleHead(EagleConfig(hidden_size=V, vocab_size=V, num_attention_heads=3, intermediate_size=12))
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.7)
    g = torch.Generator().manual_seed(5)
    return head.bind(torch.randn(V, V, generator=g), 1.5 * torch.randn(V, V, generator=g))


def eagle_samples(bigram_model, drafter_cls):
    table = tables()[0]
    prompt = TokenPrompt(torch.tensor([PROMPT]).expand(ROWS, -1).clone(), torch.full((ROWS,), len(PROMPT)))
    decoder = SpeculativeDecoder(bigram_model(table), drafter_cls(bigram_head(), window=3))
    out = decoder.generate(prompt, DRAWS, seeds=range(ROWS))
    return out.tokens, out.stats.tokens_per_step[0], ar_joint(table, SamplingConfig(), DRAWS)


@pytest.mark.slow
def test_exact_rule_over_eagle_drafts_follows_the_ar_distribution(bigram_model, chi2_pvalue):
    tokens, first_step, joint = eagle_samples(bigram_model, EagleDrafter)
    assert (first_step == 1).float().mean() > 0.05 and (first_step >= 2).float().mean() > 0.05  # both paths
    pvalues = window_pvalues(tokens, joint, chi2_pvalue)
    assert min(pvalues.values()) > LOSSLESS_ALPHA, pvalues


@pytest.mark.slow
def test_detector_fires_on_a_drafter_that_misreports_q(bigram_model, chi2_pvalue):
    tokens, _, joint = eagle_samples(bigram_model, UniformQDrafter)
    pvalues = window_pvalues(tokens, joint, chi2_pvalue)
    assert min(pvalues.values()) < CONTROL_ALPHA, pvalues


# --------------------------------------------------------------------------------------------- interfaces
def test_top_k_per_depth(target, prompt):
    drafter = EagleDrafter(head_for(target.model), WINDOW)
    SpeculativeDecoder(target, drafter, retire_below=0.0).generate(prompt, 4)
    tokens, probs = drafter.top_k(2, 5)
    assert tokens.shape == probs.shape == (len(PROMPTS), 5)
    assert bool((probs[:, :-1] >= probs[:, 1:]).all())
    assert torch.allclose(probs[:, 0], drafter._q[:, 2].max(-1).values)
    with pytest.raises(ValueError, match="depth"):
        drafter.top_k(WINDOW, 1)


def test_save_and_load_round_trip(target, tmp_path):
    head = head_for(target.model)
    save_eagle(head, tmp_path)
    loaded = load_eagle(tmp_path / "eagle.safetensors")
    assert loaded.config == head.config
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), loaded.state_dict().values()))
    assert not any("embed" in k or "lm_head" in k for k in loaded.state_dict())  # the target's, not shipped


def test_bad_heads_are_refused(target, tiny_llama, prompt, tmp_path):
    hf = target.model
    with pytest.raises(ValueError, match="hidden size"):
        EagleHead(EagleConfig(16, 64, 4, 32)).bind(hf.get_input_embeddings(), hf.get_output_embeddings())
    with pytest.raises(RuntimeError, match="not bound"):
        EagleDrafter(EagleHead(EagleConfig(32, 64, 4, 64)))
    other = tiny_llama(2, vocab=32)  # same hidden size, another vocabulary
    with pytest.raises(ValueError, match="vocabulary"):
        SpeculativeDecoder(target, EagleDrafter(head_for(other.model))).generate(prompt, 4)
    with pytest.raises(ValueError, match="EAGLE head weights"):
        build_decoder(target, "eagle")
    with pytest.raises(ValueError, match="num_attention_heads"):
        EagleConfig(30, 64, 4, 64)
    with pytest.raises(FileNotFoundError, match="EAGLE weights"):
        load_eagle(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="window"):
        EagleDrafter(head_for(hf), window=0)
