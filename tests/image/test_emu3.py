"""Emu3 through the image pipeline, on a tiny random transformers Emu3ForConditionalGeneration saved to disk with
an offline word-level tokenizer: folder recognition, every method, greedy methods equal AR, guidance equal to two
separate full forwards, end-of-line slots, decoding equal to transformers' own path, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mmaccel.image.emu3 import Emu3Family
from mmaccel.image.family import TokenLayout, load_family
from mmaccel.image.pipeline import ImageARPipeline
from mmaccel.image.testing.random_models import _EMU3_SPECIAL as SPECIAL  # Emu3's own special-token names
from mmaccel.methods import METHODS
from mmaccel.sampling import SamplingConfig

N_CODES = 32
PROMPTS = ["a cat", "a red dog running in the rain"]  # different lengths; the negative prompt is longer still


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", *map(str, range(10)), "*", ",", ".", "a", "cat", "dog", "red", "running", "in", "the", "rain"]
    visual = [f"<|visual token {i:06d}|>" for i in range(N_CODES)]
    vocab = {t: i for i, t in enumerate(words + list(SPECIAL.values()) + visual)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    # "8*8" must split into digits and "*" as Emu3's BPE does.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        pad_token=SPECIAL["pad"],
        unk_token="[UNK]",
        extra_special_tokens={
            "boi_token": SPECIAL["boi"],
            "eoi_token": SPECIAL["eoi"],
            "image_token": SPECIAL["image"],
            "image_wrapper_token": SPECIAL["wrapper"],
            "eof_token": SPECIAL["eof"],
        },
    )
    tokenizer.add_tokens(list(SPECIAL.values()) + visual, special_tokens=True)
    return tokenizer


def _save_emu3(folder, hidden: int = 32, layers: int = 2, seed: int = 0):
    from transformers import Emu3Config, Emu3ForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    tokenizer.save_pretrained(folder)
    vocab = tokenizer.get_vocab()
    config = Emu3Config(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=vocab[SPECIAL["pad"]],
            bos_token_id=vocab[SPECIAL["bos"]],
            eos_token_id=vocab[SPECIAL["eos"]],
        ),
        vq_config=dict(
            codebook_size=N_CODES,
            embed_dim=4,
            latent_channels=4,
            base_channels=32,
            channel_multiplier=[1, 1],  # spatial factor 2
            num_res_blocks=1,
            attn_resolutions=[],
            temporal_downsample_factor=2,
            hidden_size=32,  # the middle block's attention
        ),
        vocabulary_map=vocab,
        image_area=64,  # 8 x 8 pixels: a 4 x 4 grid of codes
    )
    Emu3ForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def emu3_dir(tmp_path_factory):
    return _save_emu3(tmp_path_factory.mktemp("tiny_emu3"))


@pytest.fixture(scope="module")
def pipe(emu3_dir):
    torch.set_num_threads(1)
    return ImageARPipeline.from_pretrained(emu3_dir)


@pytest.fixture(scope="module")
def ar_tokens(pipe):
    """Greedy AR tokens per guidance scale, computed once."""
    cache = {}

    def get(scale):
        if scale not in cache:
            cache[scale] = pipe(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=scale, progress=False).tokens
        return cache[scale]

    return get


def _check_layout(family, tokens):
    """EOL in every row-end slot and nowhere else; mapped back, only visual tokens and EOL."""
    layout = family.layout
    is_end = layout.is_row_end(torch.arange(layout.num_tokens)).expand_as(tokens)
    assert bool((tokens[is_end] == layout.row_end).all())
    assert bool((tokens[~is_end] < family.n_codes).all())
    real = family.model.token_ids.cpu()[tokens]
    mapping = family.hf_model.vocabulary_mapping
    assert bool((real[is_end] == mapping.eol_token_id).all())
    assert bool(torch.isin(real[~is_end], torch.tensor(mapping.image_tokens)).all())
    names = family.tokenizer.convert_ids_to_tokens(real.flatten().tolist())
    assert all(n.startswith("<|visual token ") or n == SPECIAL["eol"] for n in names)


def test_folder_is_recognised_with_its_layout(pipe, emu3_dir):
    family = pipe.family
    assert isinstance(family, Emu3Family) and family.conditioning == "text" and family.num_classes is None
    assert family.layout == TokenLayout(4, 4, row_end=N_CODES)
    assert pipe.model.vocab_size == N_CODES + 1 and pipe.num_tokens == 20
    # Everything before the grid is the prompt: bos, text, image start, "4*4", image wrapper.
    ids = family.prompt(prompts=["a cat"]).ids[0].tolist()
    assert family.tokenizer.convert_ids_to_tokens(ids) == [
        SPECIAL["bos"], "a", "cat", SPECIAL["boi"], "4", "*", "4", SPECIAL["wrapper"],
    ]  # fmt: skip
    uncond = family.tokenizer.convert_ids_to_tokens(pipe.model.uncond_ids)
    assert uncond[0] == SPECIAL["bos"] and uncond[-5:] == [SPECIAL["boi"], "4", "*", "4", SPECIAL["wrapper"]]


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_with_row_ends_in_place(pipe, method):
    kwargs = dict(prompt=PROMPTS, method=method, guidance_scale=2.0, seed=3, progress=False)
    needs = {"draft": "needs a draft model", "eagle": "needs EAGLE head weights"}.get(METHODS[method].drafter)
    if needs is not None:  # no draft model and no EAGLE head for this family: refused by name
        with pytest.raises(ValueError, match=needs):
            pipe(**kwargs)
        return
    out = pipe(**kwargs)
    assert out.tokens.shape == (2, 20)
    _check_layout(pipe.family, out.tokens)
    assert [im.size for im in out.images] == [(8, 8)] * 2
    assert all(m.width == 256 and m.height > 256 for m in out.acceptance_maps)  # the square map, its legend below
    assert all(1 <= s["steps"] <= 20 for s in out.stats)


@pytest.mark.parametrize("scale", [1.0, 3.0])
@pytest.mark.parametrize("method", ["sjd", "gsd", "lantern", "typical", "greedy"])
def test_greedy_methods_reproduce_ar_tokens(pipe, ar_tokens, method, scale):
    fast = pipe(prompt=PROMPTS, method=method, temperature=0, guidance_scale=scale, progress=False)
    assert torch.equal(fast.tokens, ar_tokens(scale))


def test_a_smaller_emu3_drafts_for_the_draft_methods(emu3_dir, ar_tokens, tmp_path):
    pipe = ImageARPipeline.from_pretrained(emu3_dir, draft=_save_emu3(tmp_path / "small", hidden=16, layers=1, seed=4))
    for method in [m for m, spec in METHODS.items() if spec.drafter == "draft"]:
        out = pipe(prompt=PROMPTS, method=method, guidance_scale=2.0, seed=3, progress=False)
        _check_layout(pipe.family, out.tokens)
        assert all(s["batch_draft_nfe"] > 0 for s in out.stats)
    fast = pipe(prompt=PROMPTS, method="draft", temperature=0, guidance_scale=3.0, progress=False)
    assert torch.equal(fast.tokens, ar_tokens(3.0))


def _full_logits(family, prompt_ids: list[int], tokens: torch.Tensor) -> torch.Tensor:
    """Image-vocabulary logits choosing each generated token, from one plain full forward (no SlotCache)."""
    ids = family.model.token_ids.cpu()
    seq = torch.cat([torch.tensor(prompt_ids), ids[tokens]])[None]
    with torch.no_grad():
        logits = family.hf_model(input_ids=seq).logits[0].float()
    start = len(prompt_ids) - 1
    return logits[start : start + len(tokens), ids]


def test_guidance_equals_separate_full_forwards(pipe, ar_tokens):
    """Greedy guided tokens are the argmax of u + s (c - u) from separate full forwards of the conditional and the
    (longer) negative prompt, each followed by the same generated tokens: both rows stayed in step."""
    family, scale = pipe.family, 3.0
    tokens = ar_tokens(scale)
    cond = family.prompt(prompts=PROMPTS)
    index = torch.arange(family.layout.num_tokens)[None]
    for row in range(len(PROMPTS)):
        c = _full_logits(family, cond.ids[row, : cond.lengths[row]].tolist(), tokens[row])
        u = _full_logits(family, pipe.model.uncond_ids, tokens[row])
        guided = family.layout.constrain((u + scale * (c - u))[None], index)[0]
        assert torch.equal(guided.argmax(-1), tokens[row])


def test_adapter_computes_only_the_image_columns(pipe):
    """Prefill and cached forwards give the full model's logits at the image tokens' columns, with the layout
    forced: EOL only (and certain) at row ends."""
    family, model = pipe.family, pipe.model
    prompt = family.prompt(prompts=PROMPTS)
    tokens = torch.tensor([[3, 7, 1, 30, N_CODES, 5], [0, 31, 2, 2, N_CODES, 9]])
    cache = model.new_cache(2, 64)
    first = model.prefill(prompt, cache).logits[:, 0]
    positions = prompt.lengths[:, None] + torch.arange(tokens.shape[1])
    later = model.forward(tokens, positions, cache).logits
    floor = torch.finfo(torch.float32).min
    for row in range(2):
        full = _full_logits(family, prompt.ids[row, : prompt.lengths[row]].tolist(), tokens[row])
        got = torch.cat([first[row, None], later[row, :-1]])  # the logits choosing generated tokens 0..5
        image = ~family.layout.is_row_end(torch.arange(6))
        torch.testing.assert_close(got[image, :N_CODES], full[image, :N_CODES], atol=1e-4, rtol=1e-4)
        assert bool((got[image, N_CODES] == floor).all())  # EOL never in an image slot
        assert bool((got[~image, :N_CODES] == floor).all()) and bool((got[~image, N_CODES] > floor).all())


def test_acceptance_steps_have_the_grid_shape(pipe):
    decoder = pipe.build_decoder("sjd", SamplingConfig(), guidance_scale=2.0)
    out = decoder.generate(pipe.family.prompt(prompts=PROMPTS), pipe.num_tokens, seeds=[0, 1])
    assert pipe.family.layout.to_grid(out.stats.accept_step).shape == (2, 4, 4)


def test_decode_matches_transformers(pipe):
    """Our decode equals transformers' documented path: decode_image_tokens, then Emu3ImageProcessor.postprocess
    with the checkpoints' normalisation (mean = std = 0.5)."""
    import numpy as np
    from transformers import Emu3ImageProcessor

    family = pipe.family
    tokens = pipe(prompt=PROMPTS, method="ar", seed=5, progress=False).tokens
    ours = family.decode(tokens)
    assert ours.dtype == torch.uint8 and ours.shape == (2, 8, 8, 3)
    real = family.model.token_ids.cpu()[tokens]
    tail = torch.zeros(2, 3, dtype=torch.long)  # eof, eoi, eos: decode_image_tokens drops the last three
    pixels = family.hf_model.decode_image_tokens(image_tokens=torch.cat([real, tail], 1), height=4, width=4)
    processor = Emu3ImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    images = processor.postprocess(list(pixels.float()), return_tensors="PIL.Image.Image")["pixel_values"]
    assert np.array_equal(ours.numpy(), np.stack([np.array(im) for im in images]))


def test_codebook_and_token_embeddings(pipe):
    family = pipe.family
    codebook, embeddings = family.codebook(), family.token_embeddings()
    vq = family.vq.quantize.embedding.weight
    assert codebook.shape == (N_CODES + 1, vq.shape[1] + 1)
    torch.testing.assert_close(codebook[:N_CODES, :-1], vq.detach().float())
    table = family.hf_model.get_input_embeddings().weight.detach()
    visual = torch.tensor(family.hf_model.vocabulary_mapping.image_tokens)
    assert embeddings.shape == (N_CODES + 1, table.shape[1] + 1)
    torch.testing.assert_close(embeddings[:N_CODES, :-1], table[visual].float())
    assert bool((embeddings[N_CODES, :-1] == 0).all()) and float(embeddings[N_CODES, -1]) > 0  # EOL kept apart


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(class_labels=[1]), "class_labels"),
        (dict(prompt=PROMPTS, guidance_scale=-1.0), "guidance_scale"),
        (dict(prompt=[]), "empty"),
        (dict(prompt=[3]), "strings"),
    ],
)
def test_bad_input(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(progress=False, **kwargs)


def _edited_copy(src, dst, edit):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_foreign_folders_fail_clearly(emu3_dir, tmp_path):
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="no recognisable image model checkpoint.*emu3: config.json"):
        load_family(other)
    original = _edited_copy(emu3_dir, tmp_path / "original", lambda c: c.update(model_type="Emu3"))
    with pytest.raises(ValueError, match="Emu3-Gen-hf"):
        load_family(original)
    no_map = _edited_copy(emu3_dir, tmp_path / "no_map", lambda c: c.pop("vocabulary_map"))
    with pytest.raises(ValueError, match="vocabulary_map"):
        load_family(no_map)
    short = _edited_copy(
        emu3_dir, tmp_path / "short", lambda c: c["vocabulary_map"].pop(f"<|visual token {N_CODES - 1:06d}|>")
    )
    with pytest.raises(ValueError, match=f"{N_CODES - 1} visual tokens .* {N_CODES} codes"):
        load_family(short)
    no_weights = _edited_copy(emu3_dir, tmp_path / "no_weights", lambda c: None)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        load_family(no_weights)
