"""Classifier-free guidance as a wrapper: cond and uncond rows always see the same tokens, the guided logits are
``u + s (c - u)`` of two separate unguided forwards, and the guidance interval switches guidance off outside it."""

from __future__ import annotations

import pytest
import torch

from mmaccel import (
    CFGModel,
    DraftModelDrafter,
    GuidedPrompt,
    JacobiDrafter,
    MultiHeadDrafter,
    SamplingConfig,
    SpeculativeDecoder,
)
from mmaccel.drafting import DraftHeads
from mmaccel.models import TokenPrompt

# Per row, the uncond prompt is shorter, longer, or as long as the cond prompt.
COND = [[1, 2, 3, 4], [5, 6], [7, 8, 9]]
UNCOND = [[0], [0, 63, 62, 61, 60], [0, 50, 51]]
SCALE = 2.5


def guided_prompt() -> GuidedPrompt:
    return GuidedPrompt(TokenPrompt.from_lists(COND), TokenPrompt.from_lists(UNCOND))


class RecordingModel:
    """Delegates to a :class:`TokenModel` and records the tokens and positions of every ``forward``."""

    def __init__(self, model):
        self.model = model
        self.vocab_size = model.vocab_size
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def device(self):
        return self.model.device

    def new_cache(self, batch_size, max_length):
        return self.model.new_cache(batch_size, max_length)

    def prefill(self, prompt, cache, output_hidden=False):
        return self.model.prefill(prompt, cache, output_hidden)

    def forward(self, tokens, positions, cache, output_hidden=False):
        self.calls.append((tokens.clone(), positions.clone()))
        return self.model.forward(tokens, positions, cache, output_hidden)

    def embedding_table(self):
        return self.model.embedding_table()


def full_logits(target, prompt: list[int], generated: list[int]) -> torch.Tensor:
    """Cache-free logits of the unwrapped HF model at the positions that predict generated tokens 0..n."""
    ids = torch.tensor([prompt + generated])
    return target.model(input_ids=ids).logits[0, len(prompt) - 1 :].float()


def expected_guided(target, row: int, generated: list[int], scale_at) -> torch.Tensor:
    """``u + s_i (c - u)`` for generated token ``i``, from two separate unguided forwards."""
    c = full_logits(target, COND[row], generated)
    u = full_logits(target, UNCOND[row], generated)
    s = torch.tensor([scale_at(i) for i in range(c.shape[0])])[:, None]
    return u + s * (c - u)


def make_drafter(kind: str, target, small_draft):
    if kind == "jacobi":
        return JacobiDrafter(window=3)
    if kind == "draft":
        return DraftModelDrafter(CFGModel(small_draft, SCALE), window=3)
    torch.manual_seed(0)
    heads = DraftHeads(target.model.config.hidden_size, target.vocab_size, num_heads=3)
    heads.init_from_output(target.model.get_output_embeddings().weight)
    return MultiHeadDrafter(heads)


@pytest.mark.parametrize("drafter_kind", [None, "jacobi", "draft", "heads"])
def test_cond_and_uncond_rows_receive_identical_tokens(target, small_draft, drafter_kind):
    recorder = RecordingModel(target)
    cfg = CFGModel(recorder, SCALE)
    drafter = None if drafter_kind is None else make_drafter(drafter_kind, target, small_draft)
    # Every row stays to the end (retire_below=0), so each recorded call holds the whole batch.
    decoder = SpeculativeDecoder(cfg, drafter, sampling=SamplingConfig(temperature=1.0), retire_below=0)
    out = decoder.generate(guided_prompt(), 16, seeds=[3, 4, 5])
    b = len(COND)
    shift = torch.tensor([len(u) - len(c) for c, u in zip(COND, UNCOND)])
    assert len(recorder.calls) == out.stats.nfe - 1  # every step after the prompt went through forward
    for tokens, positions in recorder.calls:
        assert tokens.shape[0] == 2 * b
        assert torch.equal(tokens[:b], tokens[b:])
        # Each uncond row sits at its own positions, shifted by its prompt length difference.
        assert torch.equal(positions[b:], positions[:b] + shift[:, None])
    # The committed tokens are among those forwarded (the rows really drove generation).
    first_step_tokens = recorder.calls[0][0][:b, 0]
    assert torch.equal(first_step_tokens, out.tokens[:, 0])


def test_guided_logits_equal_two_separate_forwards(target):
    cfg = CFGModel(target, SCALE)
    b = len(COND)
    cache = cfg.new_cache(b, 32)
    prefill = cfg.prefill(guided_prompt(), cache)
    new = torch.tensor([[10, 11, 12], [13, 14, 15], [16, 17, 18]])
    positions = torch.tensor([len(c) for c in COND])[:, None] + torch.arange(3)
    out = cfg.forward(new, positions, cache)
    for row in range(b):
        expected = expected_guided(target, row, new[row].tolist(), lambda i: SCALE)
        torch.testing.assert_close(prefill.logits[row, 0], expected[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.logits[row], expected[1:], atol=1e-4, rtol=1e-4)
        # The check is not vacuous: guidance changed the logits and cond alone would not pass.
        c = full_logits(target, COND[row], new[row].tolist())
        assert (expected - c).abs().max() > 1e-3


@pytest.mark.parametrize("interval", [(0, 2), (2, 5), (1, 100)])
def test_guidance_interval(target, interval):
    """Guidance applies to generated-token indices in ``[start, end)``; elsewhere the logits are the cond ones."""
    start, end = interval
    cfg = CFGModel(target, SCALE, interval=interval)
    b = len(COND)
    cache = cfg.new_cache(b, 32)
    prefill = cfg.prefill(guided_prompt(), cache)  # predicts generated token 0
    new = torch.tensor([[10, 11, 12, 13, 14, 15]] * b)  # tokens 0..5, predicting tokens 1..6
    positions = torch.tensor([len(c) for c in COND])[:, None] + torch.arange(new.shape[1])
    out = cfg.forward(new, positions, cache)
    logits = torch.cat([prefill.logits, out.logits], 1)
    for row in range(b):
        expected = expected_guided(target, row, new[row].tolist(), lambda i: SCALE if start <= i < end else 1.0)
        torch.testing.assert_close(logits[row], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("drafter_kind", [None, "jacobi", "draft"])
def test_guided_greedy_generation_matches_a_manual_guided_loop(target, small_draft, drafter_kind):
    """End to end at temperature 0: the engine's tokens are the argmax of ``u + s (c - u)`` where ``c`` and ``u``
    come from full forwards over each row's own cond and uncond prompt plus the tokens generated so far."""
    n = 12
    cfg = CFGModel(target, SCALE, interval=(1, 9))
    drafter = None if drafter_kind is None else make_drafter(drafter_kind, target, small_draft)
    out = SpeculativeDecoder(cfg, drafter, sampling=SamplingConfig(temperature=0)).generate(guided_prompt(), n)
    for row in range(len(COND)):
        generated: list[int] = []
        for i in range(n):
            logits = expected_guided(target, row, generated, lambda j: SCALE if 1 <= j < 9 else 1.0)
            generated.append(int(logits[i].argmax()))
        assert out.tokens[row].tolist() == generated
    # Guidance matters here: unguided greedy decoding of the cond prompt gives other tokens.
    plain = SpeculativeDecoder(target, sampling=SamplingConfig(temperature=0)).generate(TokenPrompt.from_lists(COND), n)
    assert not torch.equal(plain.tokens, out.tokens)


def test_scale_one_is_the_conditional_model(target):
    """``s = 1`` gives the cond logits, so guided greedy decoding equals plain greedy decoding of the cond prompt."""
    greedy = SamplingConfig(temperature=0)
    guided = SpeculativeDecoder(CFGModel(target, 1.0), JacobiDrafter(3), sampling=greedy).generate(guided_prompt(), 10)
    plain = SpeculativeDecoder(target, sampling=greedy).generate(TokenPrompt.from_lists(COND), 10)
    assert torch.equal(guided.tokens, plain.tokens)


class MaskingModel(RecordingModel):
    """Masks every odd token id to -inf in both rows, as layout-constrained image adapters do."""

    def prefill(self, prompt, cache, output_hidden=False):
        return self._mask(super().prefill(prompt, cache, output_hidden))

    def forward(self, tokens, positions, cache, output_hidden=False):
        return self._mask(super().forward(tokens, positions, cache, output_hidden))

    @staticmethod
    def _mask(out):
        out.logits[..., 1::2] = float("-inf")
        return out


def test_tokens_masked_in_both_rows_stay_masked_not_nan(target):
    model = CFGModel(MaskingModel(target), SCALE)
    out = SpeculativeDecoder(model, JacobiDrafter(3), "sjd").generate(guided_prompt(), 8, seeds=[0, 1, 2])
    assert (out.tokens % 2 == 0).all()  # sampling never picked a masked id: the guided logits kept -inf
