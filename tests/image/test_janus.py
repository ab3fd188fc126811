"""Janus-Pro: a tiny random JanusForConditionalGeneration with an offline WordLevel tokenizer, saved in
transformers' layout and loaded through the pipeline; checked against transformers' own Janus generate,
processor and postprocess."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessor,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from mmaccel.image.family import load_family
from mmaccel.image.janus import JanusFamily
from mmaccel.image.pipeline import ImageARPipeline
from mmaccel.methods import METHODS
from mmaccel.models import CFGModel
from mmaccel.sampling import SamplingConfig

BOS, PAD, BOI = "<｜begin▁of▁sentence｜>", "<｜▁pad▁｜>", "<begin_of_image>"
SPECIALS = ["<unk>", BOS, "<｜end▁of▁sentence｜>", PAD, "<image_placeholder>", BOI, "<end_of_image>"]
ROLES = ["<|User|>", "<|Assistant|>"]
VOCAB = {t: i for i, t in enumerate(SPECIALS + ROLES + [":", "a", "red", "square", "blue", "green", "circle"])}
PROMPTS = ["a red square", "blue", "a green circle"]  # different lengths
N_CODES, GRID = 64, 4
DRAFT_METHODS = [m for m, spec in METHODS.items() if spec.drafter == "draft"]


def _tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS + ROLES])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # Janus' Llama tokenizer puts BOS in front of every encoded text.
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, VOCAB[BOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token="<｜end▁of▁sentence｜>",
        pad_token=PAD,
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image_placeholder>", "boi_token": BOI, "eoi_token": "<end_of_image>"},
    )


def _config(hidden: int = 32, layers: int = 2) -> JanusConfig:
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(VOCAB),
        max_position_embeddings=128,
        bos_token_id=VOCAB[BOS],
        pad_token_id=VOCAB[PAD],
    )
    # image_size / patch_size = 4: the 4 x 4 token grid (JanusConfig copies it into vq_config.num_patches).
    vision = JanusVisionConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=64,
        patch_size=16,
        projection_dim=hidden,
        num_image_tokens=GRID * GRID,
        depth=1,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=N_CODES,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1, 2],
        num_res_blocks=1,
        projection_dim=hidden,  # the aligners map into the language model's width
        image_token_embed_dim=hidden,
    )
    image_token = VOCAB["<image_placeholder>"]
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=image_token)


def _save_janus(folder, hidden: int = 32, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(_config(hidden, layers)).eval()
    with torch.no_grad():
        # transformers' 0.02 init makes a 32-wide model emit one token forever; larger weights give varied images.
        for name, p in model.named_parameters():
            if p.dim() == 2 and "vqmodel" not in name:
                p.normal_(0, 1.5 / p.shape[1] ** 0.5)
    # The converted checkpoints' generation config names Janus' pad and image start tokens.
    model.generation_config.pad_token_id = VOCAB[PAD]
    model.generation_config.boi_token_id = VOCAB[BOI]
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return _save_janus(tmp_path_factory.mktemp("janus"))


@pytest.fixture(scope="module")
def pipe(janus_dir):
    return ImageARPipeline.from_pretrained(janus_dir)


def test_folder_is_recognised_with_janus_layout(pipe):
    family = pipe.family
    assert isinstance(family, JanusFamily) and family.conditioning == "text" and family.always_guided
    assert family.layout.grid == (GRID, GRID) and family.layout.row_end is None
    assert pipe.model.vocab_size == N_CODES and pipe.num_classes is None and pipe.draft is None
    assert family.codebook().shape == (N_CODES, 8) and family.token_embeddings().shape == (N_CODES, 8)
    assert torch.equal(family.token_embeddings(), family.hf_model.model.generation_embeddings.weight)


def test_prompt_is_janus_generation_prompt(pipe):
    family = pipe.family
    prompt = family.prompt(prompts=PROMPTS)
    words = [VOCAB[w] for w in "a red square".split()]
    expected = [VOCAB[BOS], VOCAB["<|User|>"], VOCAB[":"], *words, VOCAB["<|Assistant|>"], VOCAB[":"], VOCAB[BOI]]
    assert prompt.ids[0, : prompt.lengths[0]].tolist() == expected
    # transformers' processor in image mode, given the SFT text, appends the image start token the same way.
    processor = JanusProcessor(JanusImageProcessor(), family.tokenizer, num_image_tokens=GRID * GRID)
    for row, text in enumerate(PROMPTS):
        sft = f"<|User|>: {text}\n\n<|Assistant|>:"
        reference = processor(text=sft, generation_mode="image")["input_ids"][0].tolist()
        assert prompt.ids[row, : prompt.lengths[row]].tolist() == reference
    uncond = family.model.unconditional_prompt(prompt)
    assert torch.equal(uncond.lengths, prompt.lengths)
    for row, n in enumerate(prompt.lengths.tolist()):
        assert uncond.ids[row, :n].tolist() == [VOCAB[BOS]] + [VOCAB[PAD]] * (n - 2) + [VOCAB[BOI]]


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs(pipe, method):
    needs = {"draft": "needs a draft model", "eagle": "needs EAGLE head weights"}.get(METHODS[method].drafter)
    if needs is not None:  # no draft model and no EAGLE head for this family: refused by name
        with pytest.raises(ValueError, match=needs):
            pipe(prompt=PROMPTS[:2], method=method, progress=False)
        return
    out = pipe(prompt=PROMPTS[:2], method=method, guidance_scale=2.0, seed=3, progress=False)
    assert out.tokens.shape == (2, GRID * GRID)
    assert 0 <= int(out.tokens.min()) and int(out.tokens.max()) < N_CODES
    assert len(out.images) == len(out.acceptance_maps) == 2
    assert all(im.size == (16, 16) and im.mode == "RGB" for im in out.images)
    assert all(1 <= s["steps"] <= s["ar_steps"] for s in out.stats)


def test_greedy_methods_reproduce_ar_tokens(pipe):
    ar = pipe(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=3.0, progress=False)
    assert len(set(ar.tokens.flatten().tolist())) > 4  # the random model is not stuck on one token
    for method in ("sjd", "gsd", "lantern", "typical", "greedy"):
        fast = pipe(prompt=PROMPTS, method=method, temperature=0, guidance_scale=3.0, progress=False)
        assert torch.equal(ar.tokens, fast.tokens), method


def test_a_smaller_janus_drafts_for_the_draft_methods(janus_dir, tmp_path):
    # As Janus-Pro-1B would for Janus-Pro-7B: same tokenizer and VQ, a smaller language model.
    draft = _save_janus(tmp_path / "small", hidden=16, layers=1, seed=4)
    pipe = ImageARPipeline.from_pretrained(janus_dir, draft=draft)
    assert pipe.draft.hf_model.config.text_config.hidden_size == 16
    for method in DRAFT_METHODS:
        out = pipe(prompt=PROMPTS[:2], method=method, guidance_scale=2.0, seed=3, progress=False)
        assert out.tokens.shape == (2, GRID * GRID) and all(s["batch_draft_nfe"] > 0 for s in out.stats)
    ar = pipe(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=3.0, progress=False)
    fast = pipe(prompt=PROMPTS, method="draft", temperature=0, guidance_scale=3.0, progress=False)
    assert torch.equal(ar.tokens, fast.tokens)


def test_greedy_ar_matches_transformers_janus_generate(pipe):
    family, model = pipe.family, pipe.family.hf_model
    config = copy.deepcopy(model.generation_config)
    config.generation_kwargs = {"boi_token_id": VOCAB[BOI]}
    config.do_sample, config.guidance_scale = False, 4.0
    for text in PROMPTS[:2]:  # transformers builds the same unconditional row; one prompt per call (no padding)
        ids = family.prompt(prompts=[text]).ids
        reference = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            generation_mode="image",
            generation_config=config,
        )
        ours = pipe(prompt=[text], method="ar", temperature=0, guidance_scale=4.0, progress=False)
        assert torch.equal(ours.tokens, reference)


def _full_logits(model, ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Generation-head logits of one unpadded prompt followed by image ``codes``, no cache, no mask."""
    embeds = torch.cat(
        [model.model.get_input_embeddings()(ids), model.prepare_embeddings_for_image_generation(codes)], 0
    )
    hidden = model.model.language_model(inputs_embeds=embeds[None]).last_hidden_state[0]
    return model.model.generation_head(hidden[ids.numel() - 1 :]).float()


@torch.no_grad()
def test_guided_logits_are_u_plus_s_times_c_minus_u(pipe):
    family, scale = pipe.family, 2.5
    prompt = family.prompt(prompts=PROMPTS[:2])
    uncond = family.model.unconditional_prompt(prompt)
    codes = torch.randint(0, N_CODES, (2, 6), generator=torch.Generator().manual_seed(0))
    guided = CFGModel(family.model, scale)
    cache = guided.new_cache(2, 32)
    first = guided.prefill(prompt, cache).logits
    positions = prompt.lengths[:, None] + torch.arange(5)
    rest = guided.forward(codes[:, :5], positions, cache).logits  # teacher-forced, both rows at once
    ours = torch.cat([first, rest], 1)
    for row in range(2):
        n = int(prompt.lengths[row])
        c = _full_logits(family.hf_model, prompt.ids[row, :n], codes[row, :5])
        u = _full_logits(family.hf_model, uncond.ids[row, :n], codes[row, :5])
        torch.testing.assert_close(ours[row], u + scale * (c - u), atol=1e-4, rtol=1e-4)


def test_always_guided_even_at_scale_one(pipe):
    decoder = pipe.build_decoder("ar", SamplingConfig(), guidance_scale=1.0)
    assert isinstance(decoder.model, CFGModel) and decoder.model.scale == 1.0


def test_decode_matches_transformers_postprocess(pipe):
    family = pipe.family
    tokens = torch.randint(0, N_CODES, (2, GRID * GRID), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        decoded = family.hf_model.decode_image_tokens(tokens)
    processor = JanusImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3)  # Janus-Pro's preprocessor values
    # Channels first: transformers 5.24's PIL backend mistakes a channels-last 16 x 16 x 3 image for 16 channels.
    images = list(decoded.permute(0, 3, 1, 2).float())
    reference = processor.postprocess(images, return_tensors="PIL.Image.Image")["pixel_values"]
    ours = family.decode(tokens)
    assert ours.dtype == torch.uint8 and ours.shape == (2, 16, 16, 3)
    for image, expected in zip(ours, reference):
        assert np.array_equal(image.numpy(), np.array(expected))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(class_labels=[0]), "class_labels"),
        (dict(prompt=["a red square"], guidance_scale=-1.0), "guidance_scale"),
        (dict(prompt=[3]), "strings"),
    ],
)
def test_bad_input(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(progress=False, **kwargs)
    with pytest.raises(ValueError, match="class_labels"):
        pipe.family.prompt(class_labels=[1])


def test_other_folders_are_not_janus(tmp_path):
    llama = tmp_path / "llama"
    LlamaForCausalLM(
        LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=20)
    ).save_pretrained(llama)
    assert not JanusFamily.matches(llama)
    with pytest.raises(ValueError, match="no recognisable"):
        load_family(llama)
    with pytest.raises(ValueError, match="model_type is 'llama', not 'janus'"):
        load_family(llama, family="janus")
    original = tmp_path / "original"  # DeepSeek's own (custom-code) Janus-Pro layout
    original.mkdir()
    (original / "config.json").write_text(json.dumps({"model_type": "multi_modality"}))
    with pytest.raises(ValueError, match="transformers conversion"):
        JanusFamily.from_pretrained(original)
    with pytest.raises(FileNotFoundError, match="config.json"):
        JanusFamily.from_pretrained(tmp_path)
