"""The core's SlotLlama: the slot is a function of the position alone, a plain decoder's weights load into it with
the same logits, and a cached window reads the slots of the positions it is given."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mmaccel.models.slot_llama import SlotLlama, new_llama, slot_of, with_slots

CONFIG = dict(
    vocab_size=50,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=64,
)


def test_slots_repeat_with_the_period_after_the_prompt():
    assert slot_of(torch.arange(9), period=3, offset=2).tolist() == [3, 3, 0, 1, 2, 0, 1, 2, 0]


def test_a_plain_decoder_loads_with_a_zero_table_and_the_same_logits():
    torch.manual_seed(0)
    plain = LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()
    slotted = with_slots(plain, 4, 1).eval()
    x = torch.randint(50, (2, 12))
    assert torch.equal(slotted(input_ids=x).logits, plain(input_ids=x).logits)
    torch.nn.init.normal_(slotted.slots.weight)  # the control: the table does reach the logits
    assert not torch.allclose(slotted(input_ids=x).logits, plain(input_ids=x).logits)


def test_a_cached_window_reads_the_slots_of_its_positions():
    torch.manual_seed(0)
    model = new_llama(LlamaConfig(**CONFIG, slot_period=4, slot_offset=1)).eval()
    assert isinstance(model, SlotLlama)
    torch.nn.init.normal_(model.slots.weight)
    x = torch.randint(50, (1, 14))
    full = model(input_ids=x).logits[:, 9:]
    prefix = model(input_ids=x[:, :9], use_cache=True)
    window = model(input_ids=x[:, 9:], position_ids=torch.arange(9, 14)[None], cache=prefix.past_key_values)
    assert torch.allclose(window.logits, full, atol=1e-5)


def test_with_slots_refuses_a_model_of_another_layout():
    model = new_llama(LlamaConfig(**CONFIG, slot_period=4, slot_offset=1))
    assert with_slots(model, 4, 1) is model
    with pytest.raises(ValueError, match="period 4"):
        with_slots(model, 9, 2)
