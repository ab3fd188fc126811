"""LlamaGen text-to-image on a tiny random T5 encoder + GPT + VQ saved to disk: the official t2i parameter
names, left-padded captions whose padding is never read, guidance with uncond_embedding, every method
through the pipeline, greedy methods token-identical to AR, folder recognition and bad input."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from mmaccel.image.family import load_family
from mmaccel.image.llamagen import LlamaGenGPT, gpt_config, hide_condition_padding
from mmaccel.image.llamagen_c2i import LlamaGenC2IFamily
from mmaccel.image.llamagen_t2i import CaptionPrompt, LlamaGenT2IFamily, LlamaGenT2IModel
from mmaccel.image.pipeline import ImageARPipeline
from mmaccel.methods import METHODS
from mmaccel.models import CFGModel
from mmaccel.models.cache import SlotCache
from mmaccel.models.vq import VQConfig, VQModel

CAPTION_TOKENS = 120  # the official cls_token_num for t2i
CAPTION_DIM = 24  # the tiny T5's d_model (flan-t5-xl: 2048), unlike the GPT width (32) so mix-ups show
WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "green", "square", "circle", "on", "the", "big", "small"]
PROMPTS = ["a red square", "a blue circle on green"]  # 4 and 6 T5 tokens with </s>

# The parameters of the official GPT-XL t2i model (LlamaGen autoregressive/models/gpt.py: GPT_XL =
# n_layer 36, n_head 20, dim 1280; sample_t2i.py: model_type t2i, cls_token_num 120, vocab_size 16384,
# caption_dim 2048 from flan-t5-xl), written out from the official module definitions: CaptionEmbedder's
# cap_proj = MLP(fc1: 2048 -> 1280, GELU(tanh), fc2: 1280 -> 1280, no biases) and its persistent
# uncond_embedding buffer of shape [120, 2048]; fused wqkv of (20 + 2 * 20) * 64 rows; SwiGLU width
# find_multiple(int(2 * 4 * 1280 / 3), 256) = 3584; freqs_cis is a plain attribute, not in the state dict.
OFFICIAL_GPT_XL_T2I_GLOBAL = {
    "cls_embedding.cap_proj.fc1.weight": (1280, 2048),
    "cls_embedding.cap_proj.fc2.weight": (1280, 1280),
    "cls_embedding.uncond_embedding": (120, 2048),
    "tok_embeddings.weight": (16384, 1280),
    "norm.weight": (1280,),
    "output.weight": (16384, 1280),
}
OFFICIAL_GPT_XL_T2I_LAYER = {
    "attention.wqkv.weight": (3840, 1280),
    "attention.wo.weight": (1280, 1280),
    "feed_forward.w1.weight": (3584, 1280),
    "feed_forward.w2.weight": (1280, 3584),
    "feed_forward.w3.weight": (3584, 1280),
    "attention_norm.weight": (1280,),
    "ffn_norm.weight": (1280,),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _save_t5(folder, d_model: int = CAPTION_DIM) -> None:
    """A tiny T5 encoder and a word-level tokenizer that ends every caption with </s>, like T5's."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    config = T5Config(
        vocab_size=len(WORDS), d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2, is_encoder_decoder=False
    )
    torch.manual_seed(7)
    T5EncoderModel(config).save_pretrained(folder)


def _t2i_gpt(seed: int, layers: int) -> LlamaGenGPT:
    config = gpt_config(
        "GPT-Tiny",
        model_type="t2i",
        caption_dim=CAPTION_DIM,
        cls_token_num=CAPTION_TOKENS,
        n_layer=layers,
        vocab_size=64,
        block_size=16,
    )
    torch.manual_seed(seed)
    gpt = LlamaGenGPT(config)
    for p in gpt.parameters():  # the official init zeroes the output head: every token would tie
        torch.nn.init.normal_(p, std=0.3)
    return gpt.eval()


@pytest.fixture(scope="module")
def t2i_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_t2i_model")
    torch.manual_seed(0)
    VQModel(VQConfig.named("VQ-tiny")).save_pretrained(folder, "vq")
    for name, seed, layers in (("gpt", 1, 2), ("draft", 2, 1)):
        gpt = _t2i_gpt(seed, layers)
        save_file(gpt.state_dict(), str(folder / f"{name}.safetensors"))
        gpt.config.save(folder / f"{name}_config.json")
    _save_t5(folder / "t5")
    return folder


@pytest.fixture(scope="module")
def pipe(t2i_dir):
    return ImageARPipeline.from_pretrained(t2i_dir)


@pytest.fixture(scope="module")
def greedy_ar(pipe):
    return pipe(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=1.5, progress=False).tokens


def test_gpt_xl_t2i_state_dict_matches_official_names_and_shapes():
    expected = dict(OFFICIAL_GPT_XL_T2I_GLOBAL)
    for i in range(36):
        expected.update({f"layers.{i}.{k}": v for k, v in OFFICIAL_GPT_XL_T2I_LAYER.items()})
    config = gpt_config("GPT-XL", model_type="t2i", cls_token_num=120, caption_dim=2048, block_size=256)
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in LlamaGenGPT(config).state_dict().items()}
    assert ours == expected


def test_captions_are_left_padded_t5_features(pipe, t2i_dir):
    prompt = pipe.family.prompt(prompts=PROMPTS)
    assert prompt.embeddings.shape == (2, CAPTION_TOKENS, CAPTION_DIM)
    assert prompt.valid.sum(1).tolist() == [4, 6]
    assert prompt.valid[:, -4:].all() and not prompt.valid[:, : CAPTION_TOKENS - 6].any()
    assert torch.all(prompt.embeddings[~prompt.valid] == 0)
    t5 = T5EncoderModel.from_pretrained(t2i_dir / "t5").eval()
    ids = torch.tensor([[3, 4, 7, 1]])  # "a red square </s>"
    with torch.no_grad():
        direct = t5(input_ids=ids).last_hidden_state
    torch.testing.assert_close(prompt.embeddings[0, -4:], direct[0], atol=1e-5, rtol=0)


def test_long_prompt_is_truncated_to_120_tokens(pipe):
    prompt = pipe.family.prompt(prompts=["red " * 200, "a square"])
    assert prompt.valid.sum(1).tolist() == [CAPTION_TOKENS, 3]
    out = pipe(prompt="big " * 300, method="sjd", progress=False)
    assert out.tokens.shape == (1, 16)


def test_unconditional_row_is_uncond_embedding_under_the_caption_mask(pipe):
    model = pipe.model
    prompt = pipe.family.prompt(prompts=PROMPTS)
    uncond = model.unconditional_prompt(prompt)
    null = model.gpt.cls_embedding.uncond_embedding
    assert torch.equal(uncond.embeddings, null.expand(2, -1, -1)) and torch.equal(uncond.valid, prompt.valid)


def test_padding_mask_is_the_official_generate_mask():
    # Official generate(): causal_mask[:, :, :T] *= emb_masks[:, None]; then the diagonal is set to 1.
    t, n = 7, 4
    valid = torch.tensor([[False, False, True, True], [False, True, True, True]])
    official = torch.tril(torch.ones(t, t)).repeat(2, 1, 1)
    official[:, :, :n] = official[:, :, :n] * valid[:, None].float()
    eye = torch.eye(t)
    official = official * (1 - eye) + eye
    positions = torch.arange(t).expand(2, -1)
    causal = torch.zeros(t, t).masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), torch.finfo(torch.float32).min)
    ours = hide_condition_padding(causal.expand(2, 1, t, t), positions, valid)
    assert torch.equal(ours[:, 0] == 0, official.bool())


def test_padded_caption_slots_are_never_read(pipe):
    model = pipe.model
    prompt = pipe.family.prompt(prompts=PROMPTS)
    noise = torch.randn(prompt.embeddings.shape, generator=torch.Generator().manual_seed(0))
    noisy = CaptionPrompt(prompt.embeddings + noise * (~prompt.valid)[..., None], prompt.valid)
    tokens = torch.randint(64, (2, 5), generator=torch.Generator().manual_seed(1))
    positions = CAPTION_TOKENS + torch.arange(5).expand(2, -1)
    outs = []
    for p in (prompt, noisy):
        cache = model.new_cache(2, CAPTION_TOKENS + 16)
        outs.append(torch.cat([model.prefill(p, cache).logits, model.forward(tokens, positions, cache).logits], 1))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    # Without the mask the padding would be read: a plain causal pass gives other logits.
    with torch.no_grad():
        unmasked = model.gpt(noisy.embeddings, tokens)[:, CAPTION_TOKENS - 1 :]
    assert not torch.allclose(unmasked, outs[0], atol=1e-3)


def test_guided_logits_are_u_plus_s_c_minus_u_of_full_forwards(pipe):
    scale = 2.5
    model = pipe.model
    tokens = pipe(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=scale, progress=False).tokens
    prompt = pipe.family.prompt(prompts=PROMPTS)
    uncond = model.unconditional_prompt(prompt)
    with torch.no_grad():
        c, u = (model.gpt(p.embeddings, tokens[:, :-1], p.valid)[:, CAPTION_TOKENS - 1 :] for p in (prompt, uncond))
    reference = u + scale * (c - u)
    assert torch.equal(reference.argmax(-1), tokens)  # both rows were fed the same generated tokens
    guided = CFGModel(model, scale)
    cache = guided.new_cache(2, CAPTION_TOKENS + 16)
    first = guided.prefill(prompt, cache).logits
    positions = CAPTION_TOKENS + torch.arange(15).expand(2, -1)
    rest = guided.forward(tokens[:, :-1], positions, cache).logits
    torch.testing.assert_close(torch.cat([first, rest], 1), reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs(pipe, method):
    if METHODS[method].drafter == "eagle":  # the folder holds no EAGLE head (tests/image/test_eagle.py has one)
        with pytest.raises(ValueError, match="needs EAGLE head weights"):
            pipe(prompt=PROMPTS, method=method, progress=False)
        return
    out = pipe(prompt=PROMPTS, method=method, guidance_scale=2.0, seed=3, progress=False)
    assert out.tokens.shape == (2, 16) and 0 <= int(out.tokens.min()) and int(out.tokens.max()) < 64
    assert len(out.images) == len(out.acceptance_maps) == 2 and out.images[0].size == (8, 8)
    assert [s["prompt"] for s in out.stats] == PROMPTS and all(1 <= s["steps"] <= 16 for s in out.stats)


@pytest.mark.parametrize(
    "method", ["sjd", "gsd", "lantern", "typical", "greedy", "draft", "lantern-draft", "lantern++"]
)
def test_greedy_methods_reproduce_ar_tokens(pipe, greedy_ar, method):
    fast = pipe(prompt=PROMPTS, method=method, temperature=0, guidance_scale=1.5, progress=False)
    assert torch.equal(fast.tokens, greedy_ar)


def test_folder_recognition_keeps_c2i_and_t2i_apart(t2i_dir, model_dir):
    assert LlamaGenT2IFamily.matches(t2i_dir) and not LlamaGenC2IFamily.matches(t2i_dir)
    assert LlamaGenC2IFamily.matches(model_dir) and not LlamaGenT2IFamily.matches(model_dir)
    assert isinstance(load_family(model_dir), LlamaGenC2IFamily)
    family = load_family(t2i_dir)
    assert isinstance(family, LlamaGenT2IFamily) and family.conditioning == "text" and family.num_classes is None


def test_official_file_names_load(t2i_dir, tmp_path, greedy_ar):
    # t2i_<size>_stage<k>_<res>.pt under "model" with the training args beside it, vq_ds16_t2i.pt, and the
    # T5 folder at t5-ckpt/flan-t5-xl as in the official README. The size name gives the layers and
    # widths, the resolution (64 px / 16) the 4 x 4 grid, the tensors the caption length and width.
    from safetensors.torch import load_file

    state = load_file(str(t2i_dir / "gpt.safetensors"))
    torch.save(
        {"model": state, "steps": 5, "args": argparse.Namespace(gpt_model="GPT-Tiny")},
        tmp_path / "t2i_Tiny_stage1_64.pt",
    )
    torch.save({"model": load_file(str(t2i_dir / "vq.safetensors"))}, tmp_path / "vq_ds16_t2i.pt")
    shutil.copy(t2i_dir / "vq_config.json", tmp_path / "vq_ds16_t2i_config.json")
    shutil.copytree(t2i_dir / "t5", tmp_path / "t5-ckpt" / "flan-t5-xl")
    pipe = ImageARPipeline.from_pretrained(tmp_path)
    assert isinstance(pipe.family, LlamaGenT2IFamily) and pipe.draft is None
    assert pipe.model.config.cls_token_num == CAPTION_TOKENS and pipe.model.config.caption_dim == CAPTION_DIM
    out = pipe(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=1.5, progress=False)
    assert torch.equal(out.tokens, greedy_ar)
    with pytest.raises(ValueError, match="needs a draft model"):
        pipe(prompt=PROMPTS, method="draft", progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(class_labels=[1]), "class_labels"),
        (dict(prompt=PROMPTS, guidance_scale=-1.0), "guidance_scale"),
        (dict(prompt=[]), "prompt"),
        (dict(prompt=PROMPTS, method="nope"), "method"),
    ],
)
def test_bad_input(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(progress=False, **kwargs)


def test_bad_folders_name_what_is_wrong(t2i_dir, tmp_path):
    for f in t2i_dir.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(FileNotFoundError, match="T5 encoder"):
        load_family(tmp_path)
    _save_t5(tmp_path / "flan-t5-xl", d_model=16)
    with pytest.raises(ValueError, match="d_model is 16 but the GPT's caption_dim .* is 24"):
        load_family(tmp_path)
    with pytest.raises(ValueError, match="t2i GPT"):
        LlamaGenT2IModel(LlamaGenGPT(gpt_config("GPT-Tiny")))
    with pytest.raises(TypeError, match="ConditionCache"):
        prompt = CaptionPrompt(torch.zeros(1, CAPTION_TOKENS, CAPTION_DIM), torch.ones(1, CAPTION_TOKENS))
        LlamaGenT2IModel(_t2i_gpt(0, 1)).prefill(prompt, SlotCache(200))
