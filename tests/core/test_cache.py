"""The position-addressed SlotCache driven through HFCausalLM gives the logits of a full cache-free forward,
with every sample at its own offset and after speculative rollbacks (rewrites from an earlier position)."""

from __future__ import annotations

import pytest
import torch

from mmaccel.models import SlotCache, TokenPrompt

ATOL = 1e-4


@pytest.fixture(scope="module")
def model(tiny_llama):
    # A peaked model (large init) so that a wrong context shows up as a large logit difference.
    return tiny_llama(0, init=0.3)


def full(model, seq: list[int], hidden: bool = False):
    out = model.model(input_ids=torch.tensor([seq]), output_hidden_states=hidden)
    return (out.logits[0].float(), out.hidden_states[-1][0]) if hidden else out.logits[0].float()


def test_prefill_matches_full_forward_per_sample_length(model):
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    cache = model.new_cache(len(prompts), 16)
    out = model.prefill(TokenPrompt.from_lists(prompts), cache, output_hidden=True)
    assert out.logits.shape == (3, 1, model.vocab_size)
    for row, p in enumerate(prompts):
        logits, hidden = full(model, p, hidden=True)
        torch.testing.assert_close(out.logits[row, 0], logits[-1], atol=ATOL, rtol=0)
        torch.testing.assert_close(out.hidden[row, 0], hidden[-1], atol=ATOL, rtol=0)


def test_speculative_rollback_with_per_sample_offsets(model):
    """Simulate the engine: each step forwards the last committed token plus a window of drafts at each row's
    own positions, then each row accepts its own number of drafts; later steps overwrite the rejected slots.
    Every logit must equal the cache-free forward over the row's committed tokens plus the forwarded ones."""
    g = torch.Generator().manual_seed(0)
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16]]  # long padding after row 1
    window, steps, b = 3, 8, len(prompts)
    cache = model.new_cache(b, 9 + steps * (window + 1) + window + 1)
    model.prefill(TokenPrompt.from_lists(prompts), cache)
    committed = [list(p) + [int(torch.randint(0, 64, (), generator=g))] for p in prompts]
    accepted_counts = set()
    for _ in range(steps):
        last_pos = torch.tensor([len(c) - 1 for c in committed])
        drafts = torch.randint(0, 64, (b, window), generator=g)
        tokens = torch.cat([torch.tensor([c[-1] for c in committed])[:, None], drafts], 1)
        positions = last_pos[:, None] + torch.arange(window + 1)
        out = model.forward(tokens, positions, cache, output_hidden=True)
        for row in range(b):
            seq = committed[row] + drafts[row].tolist()
            logits, hidden = full(model, seq, hidden=True)
            torch.testing.assert_close(out.logits[row], logits[-(window + 1) :], atol=ATOL, rtol=0)
            torch.testing.assert_close(out.hidden[row], hidden[-(window + 1) :], atol=ATOL, rtol=0)
            accepted = int(torch.randint(0, window + 1, (), generator=g))
            accepted_counts.add(accepted)
            committed[row] += drafts[row, :accepted].tolist() + [int(torch.randint(0, 64, (), generator=g))]
    assert accepted_counts == set(range(window + 1))  # full acceptance and every rollback depth occurred


def test_detector_sees_a_stale_slot(model):
    """Sanity check of the comparison above: skipping the rewrite of a rejected draft's slot is detected."""
    prompt = [1, 2, 3, 4]
    cache = model.new_cache(1, 16)
    model.prefill(TokenPrompt.from_lists([prompt]), cache)
    # Forward token 20 at position 4 and a draft 30 at position 5; the draft is rejected and 40 is committed there.
    model.forward(torch.tensor([[20, 30]]), torch.tensor([[4, 5]]), cache)
    expected = full(model, prompt + [20, 40, 41])[-1]
    # Broken: forward the next token at 6 without rewriting slot 5, which still holds the rejected draft.
    stale = model.forward(torch.tensor([[41]]), torch.tensor([[6]]), cache).logits[0, -1]
    assert (stale - expected).abs().max() > 1e-2
    # Correct: rewrite from the rejected slot onward, as the engine does.
    good = model.forward(torch.tensor([[40, 41]]), torch.tensor([[5, 6]]), cache).logits[0, -1]
    torch.testing.assert_close(good, expected, atol=ATOL, rtol=0)


def test_attention_mask_and_position_checks():
    cache = SlotCache(6)
    positions = torch.tensor([[0, 1], [3, 4]])
    mask = cache.attention_mask(positions)
    assert mask.shape == (2, 1, 2, 6)
    visible = mask == 0
    expected = torch.arange(6)[None, None, :] <= positions[:, :, None]
    assert torch.equal(visible[:, 0], expected)
    assert (mask[~visible] == torch.finfo(torch.float32).min).all()
    with pytest.raises(ValueError, match="positions"):
        cache.set_positions(torch.tensor([[5, 6]]))
    with pytest.raises(ValueError, match="positions"):
        cache.set_positions(torch.tensor([[-1, 0]]))
    with pytest.raises(ValueError, match="positions"):
        cache.set_positions(torch.tensor([0, 1]))


def test_reorder_keeps_rows(model):
    prompts = [[1, 2, 3], [4, 5, 6, 7], [8]]
    cache = model.new_cache(3, 12)
    model.prefill(TokenPrompt.from_lists(prompts), cache)
    cache.reorder(torch.tensor([2, 0]))
    kept = [prompts[2], prompts[0]]
    tokens = torch.tensor([[30, 31], [32, 33]])
    positions = torch.tensor([[len(p)] for p in kept]) + torch.arange(2)
    out = model.forward(tokens, positions, cache)
    for row, p in enumerate(kept):
        torch.testing.assert_close(out.logits[row], full(model, p + tokens[row].tolist())[-2:], atol=ATOL, rtol=0)
