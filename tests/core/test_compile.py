"""compile=True: the step forward under torch.compile, with static shapes, gives the eager path's tokens."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mmaccel import HFCausalLM, JacobiDrafter, SamplingConfig, SpeculativeDecoder, TokenPrompt
from mmaccel.models.cache import SlotCache


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    return HFCausalLM(LlamaForCausalLM(config))


def test_compiled_steps_give_the_eager_tokens_without_recompiling(model):
    prompts = TokenPrompt.from_lists([[1, 2, 3], [4, 5], [7]])  # different lengths: positions differ per row
    torch._dynamo.reset()
    try:
        # Static shapes mean one graph for the whole generation: a step that changed a shape would recompile.
        with torch._dynamo.config.patch(error_on_recompile=True):
            for temperature in (0.0, 1.0):
                sampling = SamplingConfig(temperature=temperature)
                outputs = []
                for compiled in (False, True):
                    decoder = SpeculativeDecoder(model, JacobiDrafter(window=4), "sjd", sampling, compile=compiled)
                    outputs.append(decoder.generate(prompts, max_new_tokens=20, seeds=[0, 1, 2]))
                eager, compiled_out = outputs
                assert torch.equal(eager.tokens, compiled_out.tokens)
                assert torch.equal(eager.stats.accept_step, compiled_out.stats.accept_step)
                assert compiled_out.stats.nfe == eager.stats.nfe
    finally:
        torch._dynamo.reset()


def test_compiling_keeps_the_batch_whole(model):
    assert SpeculativeDecoder(model, JacobiDrafter(window=4), compile=True).retire_below == 0


def test_a_static_cache_attends_over_the_whole_buffer():
    cache = SlotCache(12, static=True)
    positions = torch.tensor([[3, 4], [7, 8]])
    cache.set_positions(positions)
    assert cache.live_length == 12 and cache.shared_start is None
    mask = cache.attention_mask(positions)
    assert mask.shape == (2, 1, 2, 12)
    visible = mask[:, 0] == 0
    assert torch.equal(visible, torch.arange(12)[None, None, :] <= positions[:, :, None])
