import pytest
import torch
from safetensors.torch import save_file

from mmaccel.checkpoint import CheckpointError
from mmaccel.image.llamagen import (
    ClassPrompt,
    GPTConfig,
    LlamaGenGPT,
    LlamaGenModel,
    gpt_config,
    load_llamagen,
    rope_table_2d,
)
from mmaccel.models import CFGModel, TokenModel

# The parameters of the official GPT-B c2i model (LlamaGen autoregressive/models/gpt.py, GPT_B with
# vocab_size=16384, num_classes=1000, class_dropout_prob=0.1, block_size=256), written out by hand from
# the official module definitions: fused wqkv (n_head + 2 n_kv_head) * head_dim rows, SwiGLU width
# find_multiple(int(2 * 4 * 768 / 3), 256) = 2048, one extra class row for the null class, no biases,
# and freqs_cis held as a plain attribute (not in the state dict).
OFFICIAL_GPT_B_GLOBAL = {
    "cls_embedding.embedding_table.weight": (1001, 768),
    "tok_embeddings.weight": (16384, 768),
    "norm.weight": (768,),
    "output.weight": (16384, 768),
}
OFFICIAL_GPT_B_LAYER = {
    "attention.wqkv.weight": (2304, 768),
    "attention.wo.weight": (768, 768),
    "feed_forward.w1.weight": (2048, 768),
    "feed_forward.w2.weight": (768, 2048),
    "feed_forward.w3.weight": (2048, 768),
    "attention_norm.weight": (768,),
    "ffn_norm.weight": (768,),
}


def _meta_gpt(config: GPTConfig) -> LlamaGenGPT:
    with torch.device("meta"):
        return LlamaGenGPT(config)


def test_gpt_b_state_dict_matches_official_names_and_shapes():
    expected = dict(OFFICIAL_GPT_B_GLOBAL)
    for i in range(12):
        expected.update({f"layers.{i}.{k}": v for k, v in OFFICIAL_GPT_B_LAYER.items()})
    ours = {k: tuple(v.shape) for k, v in _meta_gpt(gpt_config("GPT-B")).state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize(
    "name, millions", [("GPT-B", 111), ("GPT-L", 343), ("GPT-XL", 775), ("GPT-XXL", 1400), ("GPT-3B", 3100)]
)
def test_named_configs_have_official_sizes(name, millions):
    # Sizes quoted in the official GPT_models comments / paper table.
    n = sum(p.numel() for p in _meta_gpt(gpt_config(name)).parameters())
    assert abs(n / 1e6 - millions) / millions < 0.03


def test_rope_table_zero_at_class_and_row_column_split():
    cfg = gpt_config("GPT-Tiny")
    table = rope_table_2d(cfg)
    g, quarter = cfg.grid_size, cfg.head_dim // 4
    assert table.shape == (1 + cfg.block_size, cfg.head_dim // 2, 2)
    assert torch.all(table[0] == 0)
    r, c = 2, 3
    row = table[1 + r * g + c]
    # The lowest frequency is 1: pair 0 turns by the row index, pair `quarter` by the column index.
    assert torch.allclose(row[0], torch.tensor([torch.cos(torch.tensor(r * 1.0)), torch.sin(torch.tensor(r * 1.0))]))
    assert torch.allclose(
        row[quarter], torch.tensor([torch.cos(torch.tensor(c * 1.0)), torch.sin(torch.tensor(c * 1.0))])
    )


def _random_gpt(seed: int = 0, **overrides) -> LlamaGenGPT:
    torch.manual_seed(seed)
    gpt = LlamaGenGPT(gpt_config("GPT-Tiny", **overrides))
    for p in gpt.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return gpt.eval()


@pytest.mark.parametrize("n_kv_head", [None, 1])
def test_windowed_cached_forward_matches_full_forward(n_kv_head):
    gpt = _random_gpt(n_kv_head=n_kv_head)
    model = LlamaGenModel(gpt)
    assert isinstance(model, TokenModel)
    cfg = gpt.config
    b, n = 3, cfg.block_size
    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 3, cfg.num_classes])  # the null class too
    # written[b, i] is the image token held in cache slot 1 + i.
    written = torch.randint(cfg.vocab_size, (b, n), generator=gen)
    cache = model.new_cache(b, 1 + n)

    def reference(positions):
        with torch.no_grad():
            full = gpt(labels, written)  # [B, n + 1, V]: logits at every position
        return full.gather(1, positions[..., None].expand(-1, -1, full.shape[-1]))

    out = model.prefill(ClassPrompt(labels), cache)
    torch.testing.assert_close(out.logits, reference(torch.zeros(b, 1, dtype=torch.long)), atol=1e-4, rtol=0)

    # (start position per sample, window length): staggered offsets as accepted counts differ, then a
    # rollback that rewrites from earlier positions, then the final window reaching the last slot.
    steps = [
        ([1, 1, 1], 4),
        ([3, 5, 2], 4),
        ([2, 1, 4], 5),
        ([7, 6, 6], 3),
        ([10, 9, 9], 4),
        ([13, 13, 12], 4),
    ]
    filled = torch.zeros(b, dtype=torch.long)  # last slot of each row's contiguous written prefix
    for starts, length in steps:
        positions = torch.tensor(starts)[:, None] + torch.arange(length)
        assert torch.all(positions[:, 0] <= filled + 1), "the test must not leave unwritten gaps"
        filled = torch.maximum(filled, positions[:, -1])
        tokens = torch.randint(cfg.vocab_size, positions.shape, generator=gen)
        written.scatter_(1, positions - 1, tokens)
        out = model.forward(tokens, positions, cache, output_hidden=True)
        assert out.logits.dtype == torch.float32 and out.hidden.shape == (b, length, cfg.dim)
        torch.testing.assert_close(out.logits, reference(positions), atol=1e-4, rtol=0)


def test_cfg_wrapper_runs_on_llamagen():
    model = LlamaGenModel(_random_gpt())
    guided = CFGModel(model, scale=1.0)
    cache = guided.new_cache(2, 1 + model.num_tokens)
    prompt = model.class_prompt([1, 2])
    first = guided.prefill(prompt, cache)
    plain = model.prefill(prompt, model.new_cache(2, 1 + model.num_tokens))
    # Scale 1 gives the conditional logits.
    torch.testing.assert_close(first.logits, plain.logits, atol=1e-5, rtol=0)
    tokens = first.logits.argmax(-1)
    out = guided.forward(tokens, torch.ones(2, 1, dtype=torch.long), cache)
    assert out.logits.shape == (2, 1, model.vocab_size)


@pytest.mark.parametrize("fmt", ["model", "ema", "raw", "safetensors"])
def test_checkpoint_formats_load(tmp_path, fmt):
    gpt = _random_gpt()
    state = gpt.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "gpt.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "gpt.pt"
        torch.save(state if fmt == "raw" else {fmt: state, "steps": 10}, path)
    loaded = load_llamagen(path, gpt.config)
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_config_json_beside_checkpoint(tmp_path):
    gpt = _random_gpt()
    save_file(gpt.state_dict(), str(tmp_path / "gpt.safetensors"))
    gpt.config.save(tmp_path / "gpt_config.json")
    model = LlamaGenModel.from_pretrained(tmp_path / "gpt.safetensors")
    assert model.config == gpt.config
    with pytest.raises(FileNotFoundError, match="draft_config.json"):
        load_llamagen(tmp_path / "draft.safetensors")


def test_checkpoint_of_another_config_names_key_and_shapes(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": _random_gpt(dim=48).state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_llamagen(path, gpt_config("GPT-Tiny"))
    message = str(err.value)
    assert "tok_embeddings.weight" in message and "(64, 48)" in message and "(64, 32)" in message


def test_class_id_out_of_range():
    model = LlamaGenModel(_random_gpt())
    with pytest.raises(ValueError, match="class_labels"):
        model.class_prompt([0, 5])  # num_classes = 5; 5 is the null class, not a real one
    with pytest.raises(ValueError, match="class_labels"):
        model.prefill(ClassPrompt(torch.tensor([6])), model.new_cache(1, 4))
    with pytest.raises(ValueError, match="class_labels"):
        model.class_prompt([-1])


def test_unconditional_prompt_is_null_class():
    model = LlamaGenModel(_random_gpt())
    prompt = model.class_prompt([0, 4])
    uncond = model.unconditional_prompt(prompt)
    assert uncond.labels.tolist() == [5, 5]
    both = prompt.cat(uncond)
    assert both.batch_size == 4 and both.lengths.tolist() == [1, 1, 1, 1]


def test_bad_config_and_positions():
    with pytest.raises(ValueError, match="block_size"):
        GPTConfig(block_size=250)
    with pytest.raises(ValueError, match="unknown GPT config name"):
        gpt_config("GPT-Q")
    model = LlamaGenModel(_random_gpt())
    with pytest.raises(ValueError, match="positions must be >= 1"):
        model.forward(torch.ones(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), model.new_cache(1, 4))


def test_window_past_the_last_image_token_is_scratch():
    # The engine verifies windows that can run past the image's end: those slots must not change the
    # logits of real positions.
    gpt = _random_gpt()
    model = LlamaGenModel(gpt)
    n = model.num_tokens
    tokens = torch.randint(model.vocab_size, (2, n), generator=torch.Generator().manual_seed(0))
    cache = model.new_cache(2, 1 + n + 6)
    model.prefill(model.class_prompt([1, 2]), cache)
    positions = torch.arange(1, n + 7).expand(2, -1)
    padded = torch.cat([tokens, tokens[:, :6]], 1)
    out = model.forward(padded, positions, cache)
    with torch.no_grad():
        full = gpt(torch.tensor([1, 2]), tokens)
    torch.testing.assert_close(out.logits[:, :n], full[:, 1:], atol=1e-4, rtol=0)


def test_condition_rope_zero_is_official_and_identity_makes_the_class_attendable():
    from mmaccel.image.llamagen import rope_table_2d

    official = gpt_config("GPT-B")
    assert official.condition_rope == "zero"
    assert torch.count_nonzero(rope_table_2d(official)[:1]) == 0  # zeroed: scores to the class are fixed at 0
    mini = gpt_config("GPT-Mini")
    table = rope_table_2d(mini)
    assert mini.condition_rope == "identity"
    assert torch.equal(table[0, :, 0], torch.ones(mini.head_dim // 2))  # cos 1, sin 0: unrotated
    assert torch.equal(table[0, :, 1], torch.zeros(mini.head_dim // 2))
    assert torch.equal(table[1:], rope_table_2d(official.__class__(**{**mini.to_dict(), "condition_rope": "zero"}))[1:])
    with pytest.raises(ValueError, match="condition_rope"):
        gpt_config("GPT-Mini", condition_rope="half")
