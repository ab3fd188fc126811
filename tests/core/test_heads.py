"""Multi-head drafting: distillation reduces the heads' KL to the target, and distilled heads draft tokens the
target accepts."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mmaccel import MultiHeadDrafter, SamplingConfig, SpeculativeDecoder
from mmaccel.drafting import DraftHeads, distill_heads
from mmaccel.models import ModelOutput, SlotCache, TokenPrompt

GREEDY = SamplingConfig(temperature=0)


def own_samples(model, prompts: int, length: int, temperature: float, seed: int) -> torch.Tensor:
    """Prompt plus the model's own continuation: on-policy training data, as Medusa's self-distillation uses."""
    g = torch.Generator().manual_seed(seed)
    prompt = TokenPrompt(torch.randint(0, model.vocab_size, (prompts, 4), generator=g), torch.full((prompts,), 4))
    out = SpeculativeDecoder(model, sampling=SamplingConfig(temperature=temperature)).generate(
        prompt, length, seeds=range(seed, seed + prompts)
    )
    return torch.cat([prompt.ids, out.tokens], 1)


def held_out_loss(model, heads: DraftHeads, data: torch.Tensor) -> float:
    """The distillation loss on ``data`` without training (learning rate 0 leaves the heads unchanged)."""
    probe = copy.deepcopy(heads)
    return distill_heads(model, probe, [data], lr=0.0)[0]


def test_distillation_reduces_the_kl_on_a_tiny_llama(tiny_llama):
    model = tiny_llama(0, init=0.3)
    hf = model.model
    data = own_samples(model, 128, 24, temperature=1.0, seed=0)
    held_out = own_samples(model, 32, 24, temperature=1.0, seed=1000)
    torch.manual_seed(0)
    heads = DraftHeads(hf.config.hidden_size, model.vocab_size, num_heads=3)
    heads.init_from_output(hf.get_output_embeddings().weight)
    before = held_out_loss(model, heads, held_out)
    losses = distill_heads(model, heads, [data[i % 4 * 32 : (i % 4 + 1) * 32] for i in range(40)], lr=1e-2)
    after = held_out_loss(model, heads, held_out)
    assert len(losses) == 40 and all(loss >= 0 for loss in losses)
    assert sum(losses[-8:]) < 0.8 * sum(losses[:8]), losses
    assert after < 0.8 * before, (before, after)
    assert not heads.training  # handed back in eval mode


class SuccessorModel:
    """A tiny :class:`TokenModel` whose next token is (almost surely) a fixed permutation of the current one,
    with the current token's embedding as its hidden state. Its future is predictable from the hidden state, so
    heads can learn it, and an untrained head cannot guess it."""

    def __init__(self, vocab: int = 16, dim: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab
        self.successor = torch.randperm(vocab, generator=g)
        self.embeddings = torch.randn(vocab, dim, generator=g)
        self.table = 0.5 * torch.randn(vocab, vocab, generator=g)
        self.table[torch.arange(vocab), self.successor] += 6.0

    @property
    def device(self):
        return torch.device("cpu")

    def new_cache(self, batch_size, max_length):
        return SlotCache(max_length)

    def forward(self, tokens, positions, cache, output_hidden=False):
        return ModelOutput(self.table[tokens], self.embeddings[tokens] if output_hidden else None)

    def prefill(self, prompt, cache, output_hidden=False):
        last = prompt.ids.gather(1, (prompt.lengths - 1)[:, None])
        return self.forward(last, None, cache, output_hidden)

    def embedding_table(self):
        return self.embeddings


def test_distilled_heads_are_accepted_more_often():
    model = SuccessorModel()
    torch.manual_seed(0)
    untrained = DraftHeads(16, model.vocab_size, num_heads=3)
    heads = copy.deepcopy(untrained)
    data = own_samples(model, 256, 20, temperature=1.0, seed=0)
    losses = distill_heads(model, heads, [data[i % 8 * 32 : (i % 8 + 1) * 32] for i in range(60)], lr=2e-2)
    assert losses[-1] < 0.5 * losses[0]

    g = torch.Generator().manual_seed(1)
    prompt = TokenPrompt(torch.randint(0, model.vocab_size, (16, 3), generator=g), torch.full((16,), 3))
    ar = SpeculativeDecoder(model, sampling=GREEDY).generate(prompt, 24)
    lengths = {}
    for name, h in [("distilled", heads), ("untrained", untrained)]:
        out = SpeculativeDecoder(model, MultiHeadDrafter(h), sampling=GREEDY).generate(prompt, 24)
        assert torch.equal(out.tokens, ar.tokens)  # lossless either way
        lengths[name] = out.stats.mean_accepted_length
    assert lengths["distilled"] > 2.5, lengths
    assert lengths["distilled"] > lengths["untrained"] + 1.0, lengths


class SuccessorHint:
    """A window init that knows the successor permutation: drafted index ``i`` guesses the last committed token's
    successor applied ``i - count + 1`` times."""

    def __init__(self, successor: torch.Tensor):
        self.successor = successor
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, context, index, uniforms):
        token = context.gather(1, (index[:, :1] - 1).clamp(min=0))
        hints = []
        for _ in range(index.shape[1]):  # hops along the window (a test helper, not a hot path)
            token = self.successor[token]
            hints.append(token)
        hints = torch.cat(hints, 1)
        self.calls.append((index.clone(), hints.clone()))
        return hints


def blind_successor_model() -> SuccessorModel:
    """:class:`SuccessorModel` with a hidden state that says nothing (all zeros): plain heads cannot guess."""
    model = SuccessorModel()
    model.embeddings = torch.zeros_like(model.embeddings)
    return model


def test_hinted_heads_learn_what_the_hint_says_where_the_hidden_state_says_nothing():
    from mmaccel.drafting.heads import teacher_hints

    model = blind_successor_model()
    hint = SuccessorHint(model.successor)
    data = own_samples(model, 256, 20, temperature=1.0, seed=0)  # 4 prompt tokens, then 20 generated
    batches = [data[i % 8 * 32 : (i % 8 + 1) * 32] for i in range(60)]
    torch.manual_seed(0)
    plain = DraftHeads(16, model.vocab_size, num_heads=3)
    hinted = DraftHeads(16, model.vocab_size, num_heads=3, hinted=True)
    distill_heads(model, plain, batches, lr=2e-2)
    distill_heads(model, hinted, batches, lr=2e-2, hints=lambda x: teacher_hints(hint, x, 4, 3))

    g = torch.Generator().manual_seed(1)
    prompt = TokenPrompt(torch.randint(0, model.vocab_size, (16, 4), generator=g), torch.full((16,), 4))
    ar = SpeculativeDecoder(model, sampling=GREEDY).generate(prompt, 24)
    lengths = {}
    for name, drafter in [("plain", MultiHeadDrafter(plain)), ("hinted", MultiHeadDrafter(hinted, hint=hint))]:
        out = SpeculativeDecoder(model, drafter, sampling=GREEDY).generate(prompt, 24)
        assert torch.equal(out.tokens, ar.tokens)  # lossless either way
        lengths[name] = out.stats.mean_accepted_length
    assert lengths["hinted"] > 2.5, lengths
    assert lengths["plain"] < 1.5, lengths


def test_distillation_hands_the_heads_the_hints_drafting_hands_them():
    """Every hint the drafter computed while generating equals ``teacher_hints`` at that position of the final
    sequence: distillation trains on exactly what drafting will show the heads, and sees no token past it."""
    from mmaccel.drafting.heads import teacher_hints

    model = SuccessorModel()
    hint = SuccessorHint(model.successor)
    heads = DraftHeads(16, model.vocab_size, num_heads=3, hinted=True)
    prompt = TokenPrompt(torch.randint(0, model.vocab_size, (4, 4), generator=torch.Generator().manual_seed(2)),
                         torch.full((4,), 4))
    out = SpeculativeDecoder(model, MultiHeadDrafter(heads, hint=hint), sampling=GREEDY).generate(prompt, 12)
    recorded = list(hint.calls)
    hint.calls.clear()
    full = torch.cat([prompt.ids, out.tokens], 1)
    teacher = teacher_hints(hint, full, 4, 3)  # [B, T, K]
    assert len(recorded) > 1
    for index, hints in recorded:
        for b in range(index.shape[0]):
            count = int(index[b, 0])
            if count + 3 > out.tokens.shape[1]:  # drafts past the generated length: nothing to compare with
                continue
            assert torch.equal(teacher[b, count + 4 - 2], hints[b]), (b, count)


def test_hinted_heads_refuse_a_missing_or_unexpected_hint():
    import pytest

    model = SuccessorModel()
    with pytest.raises(ValueError, match="hinted draft heads need"):
        MultiHeadDrafter(DraftHeads(16, model.vocab_size, num_heads=2, hinted=True))
    with pytest.raises(ValueError, match="take none"):
        MultiHeadDrafter(DraftHeads(16, model.vocab_size, num_heads=2), hint=SuccessorHint(model.successor))


def test_a_decoding_teacher_gives_the_guided_distribution_over_the_generated_positions(tiny_llama):
    from mmaccel.drafting.heads import decoding_teacher
    from mmaccel.models import CFGModel, GuidedPrompt

    model = tiny_llama(3, init=0.3)
    tokens = torch.randint(1, model.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    uncond = tokens.clone()
    uncond[:, 0] = 0  # a "null condition" in the first slot

    def guided_prompt(ids):
        lengths = torch.full((len(ids),), ids.shape[1])
        null = ids.clone()
        null[:, 0] = 0
        return GuidedPrompt(TokenPrompt(ids, lengths), TokenPrompt(null, lengths))

    out = decoding_teacher(CFGModel(model, 2.5), 4, prompt=guided_prompt)(tokens)
    positions = torch.arange(12).expand(3, 12)
    c = model.forward(tokens, positions, model.new_cache(3, 12), output_hidden=True)
    u = model.forward(uncond, positions, model.new_cache(3, 12))
    assert out.logits.shape[1] == 12 - 4 + 1  # positions 3 .. 11
    torch.testing.assert_close(out.logits, (u.logits + 2.5 * (c.logits - u.logits))[:, 3:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.hidden, c.hidden[:, 3:], atol=1e-4, rtol=1e-4)


def test_distilling_against_a_masked_target_ignores_its_masked_tokens(tiny_llama):
    from mmaccel.drafting.heads import bare_teacher, kl_to

    logp = torch.tensor([[0.5, 0.5, 0.0]]).log()
    logq = torch.tensor([[0.25, 0.25, 0.5]]).log()
    assert float(kl_to(logp, logq)) == pytest.approx(2 * 0.5 * float(torch.tensor(2.0).log()))

    model = tiny_llama(0, init=0.3)
    data = own_samples(model, 64, 16, temperature=1.0, seed=0)
    masked = torch.arange(model.vocab_size) % 2 == 1  # half the vocabulary is never allowed

    def teacher(tokens):
        out = bare_teacher(model)(tokens)
        return ModelOutput(out.logits.masked_fill(masked, float("-inf")), out.hidden)

    torch.manual_seed(0)
    heads = DraftHeads(model.model.config.hidden_size, model.vocab_size, num_heads=2)
    heads.init_from_output(model.model.get_output_embeddings().weight)
    losses = distill_heads(model, heads, [data[i % 2 * 32 : (i % 2 + 1) * 32] for i in range(30)], lr=1e-2, teacher=teacher)
    assert all(math.isfinite(loss) for loss in losses), losses  # -inf logits would make kl_div NaN
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses
    with torch.no_grad():
        hidden = bare_teacher(model)(data[:8]).hidden
        q = heads(hidden).softmax(-1)
    assert float(q[..., masked].sum(-1).mean()) < 0.1  # the heads learnt to leave the masked tokens alone


@pytest.mark.parametrize("hinted", [False, True])
def test_deepened_heads_compute_the_logits_of_the_heads_they_start_from(hinted):
    from mmaccel.drafting.heads import deepened_state, heads_state_layers

    torch.manual_seed(0)
    shallow = DraftHeads(16, 40, num_heads=3, num_layers=1, hinted=hinted)
    with torch.no_grad():  # trained-looking heads: no zero weights left
        for p in shallow.parameters():
            p.normal_(0, 0.3)
    deep = DraftHeads(16, 40, num_heads=3, num_layers=3, hinted=hinted)
    state = deepened_state(shallow.state_dict(), 3)
    assert heads_state_layers(state) == 3
    deep.load_state_dict(state)  # strict: every key of the deeper heads, and no other
    hidden = torch.randn(2, 5, 16)
    hints = torch.randint(0, 40, (2, 5, 3)) if hinted else None
    torch.testing.assert_close(deep(hidden, hints), shallow(hidden, hints), rtol=0, atol=0)
    # The new blocks are trainable: they change the logits once their weights move.
    with torch.no_grad():
        deep.heads[0][1].linear.weight.normal_()
    assert not torch.equal(deep(hidden, hints)[..., 0, :], shallow(hidden, hints)[..., 0, :])


def test_deepening_refuses_to_drop_blocks():
    from mmaccel.drafting.heads import deepened_state

    state = DraftHeads(8, 10, num_heads=2, num_layers=2).state_dict()
    with pytest.raises(ValueError, match="num_layers=1"):
        deepened_state(state, 1)
