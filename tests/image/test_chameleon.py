"""Lumina-mGPT / Anole on Chameleon: a tiny random ChameleonForConditionalGeneration with an offline WordLevel
tokenizer and a tiny taming VQGAN checkpoint, saved in the official layouts and loaded through the pipeline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import ChameleonConfig, ChameleonForConditionalGeneration, PreTrainedTokenizerFast

from mmaccel.image.chameleon import ChameleonFamily, size_token
from mmaccel.image.chameleon_vq import ChameleonVQConfig, ChameleonVQDecoder
from mmaccel.image.family import TokenLayout, load_family
from mmaccel.image.pipeline import ImageARPipeline
from mmaccel.methods import METHODS
from mmaccel.models import CFGModel
from mmaccel.sampling import SamplingConfig

N_CODES = 16
WORDS = "generate an image of according to the following prompt a red cat blue dog on grass : 8x8 12x8".split()
PROMPTS = ["a red cat", "a blue dog on the grass", "cat"]  # different lengths
VQ = ChameleonVQConfig(
    n_embed=N_CODES,
    embed_dim=8,
    z_channels=8,
    ch=32,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    resolution=8,
)


def _image_name(code: int) -> str:
    # Chameleon's image token names: IMGIMG + the code's digits written as letters A..J + "Z".
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def _vocabulary() -> dict[str, int]:
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    # Image tokens sit at ids 4.. in shuffled code order, so a wrong code -> id mapping cannot pass.
    for code in torch.randperm(N_CODES, generator=torch.Generator().manual_seed(1)).tolist():
        vocab[_image_name(code)] = len(vocab)
    specials = ["<eoss>", "<racm3:break>", "<reserved08706>", "<reserved08799>", "<image>"]
    for token in specials + [size_token(n) for n in range(1, 5)] + WORDS:
        vocab[token] = len(vocab)
    return vocab


def _save_tokenizer(vocab: dict[str, int], folder) -> None:
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(folder)


def _save_vqgan(folder) -> ChameleonVQDecoder:
    vq = ChameleonVQDecoder(VQ)
    # An official taming checkpoint also holds the encoder, quant_conv and the GAN loss; loading skips them.
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    state["encoder.conv_in.weight"] = torch.randn(32, 3, 3, 3)
    state["quant_conv.weight"] = torch.randn(8, 8, 1, 1)
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    (folder / "tokenizer").mkdir()
    torch.save({"state_dict": state}, folder / "tokenizer" / "vqgan.ckpt")
    dd = {
        "double_z": False,
        "z_channels": VQ.z_channels,
        "resolution": VQ.resolution,
        "in_channels": 3,
        "out_ch": 3,
        "ch": VQ.ch,
        "ch_mult": list(VQ.ch_mult),
        "num_res_blocks": VQ.num_res_blocks,
        "attn_resolutions": list(VQ.attn_resolutions),
        "dropout": 0.0,
    }
    doc = {
        "model": {
            "target": "taming.models.vqgan.VQModel",
            "params": {"embed_dim": 8, "n_embed": N_CODES, "ddconfig": dd},
        }
    }
    (folder / "tokenizer" / "vqgan.yaml").write_text(yaml.safe_dump(doc))
    return vq


def _save_tiny_chameleon(root, hidden: int = 32, layers: int = 2, seed: int = 0):
    """A random ChameleonForConditionalGeneration folder in the HF layout, with tokenizer and taming VQGAN."""
    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary()
    config = ChameleonConfig(
        vocab_size=64,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        initializer_range=0.2,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        vocabulary_map=vocab,
        vq_config=dict(
            embed_dim=8,
            num_embeddings=N_CODES,
            latent_channels=8,
            resolution=8,
            base_channels=32,
            channel_multiplier=[1, 2],
            num_res_blocks=1,
            attn_resolutions=[],
        ),
    )
    ChameleonForConditionalGeneration(config).save_pretrained(root)
    _save_tokenizer(vocab, root)
    torch.manual_seed(0)  # every folder gets the same VQGAN, as real checkpoints of one family share it
    _save_vqgan(root)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(1)
    return _save_tiny_chameleon(tmp_path_factory.mktemp("tiny_chameleon"))


@pytest.fixture(scope="module")
def pipe(folder):
    return ImageARPipeline.from_pretrained(folder)


def _real_ids(pipe, tokens):
    return pipe.family.model.image_ids().cpu()[tokens]


# ------------------------------------------------------------------------------------ recognition, layout


def test_folder_is_recognised_with_lumina_layout(pipe, folder):
    family = pipe.family
    assert isinstance(family, ChameleonFamily) and family.conditioning == "text"
    assert family.layout == TokenLayout(4, 4, row_end=N_CODES)  # 8 px VQGAN resolution / 2 px per code
    assert pipe.model.vocab_size == N_CODES + 1
    vocab = json.loads((folder / "config.json").read_text())["vocabulary_map"]
    prompt = family.prompt(prompts=["a red cat"])
    ids = prompt.ids[0, : int(prompt.lengths[0])].tolist()
    start, two, sep = vocab["<racm3:break>"], vocab["<reserved08802>"], vocab["<reserved08706>"]
    assert ids[0] == 0 and ids[-4:] == [sep, start, two, two]  # <bos> ... separator, image start, h, w
    assert vocab["8x8"] in ids and vocab["cat"] in ids  # "Generate an image of 8x8 ..." (Lumina-mGPT's template)
    uncond = family.model.unconditional_prompt(prompt)
    assert uncond.ids.tolist() == [[start, two, two]] and uncond.lengths.tolist() == [3]
    # Compact ids map to the model's own ids: code c -> the IMGIMG token of c, the row end -> <reserved08799>.
    real = _real_ids(pipe, torch.arange(N_CODES + 1)).tolist()
    assert real == [vocab[_image_name(c)] for c in range(N_CODES)] + [vocab["<reserved08799>"]]


def test_codebook_and_embeddings_keep_the_row_end_apart(pipe):
    for table in (pipe.family.codebook(), pipe.family.token_embeddings()):
        assert table.shape[0] == N_CODES + 1
        distances = torch.cdist(table[-1:].float(), table[:-1].float())
        assert float(distances.min()) > 5 * float(table[:-1].norm(dim=-1).max())
    assert torch.equal(pipe.family.codebook()[:N_CODES, :-1], pipe.family.vq.codebook())


# ---------------------------------------------------------------------------------------- generation


def _check_layout(pipe, tokens):
    layout = pipe.family.layout
    ends = layout.is_row_end(torch.arange(layout.num_tokens))
    assert (tokens[:, ends] == layout.row_end).all()
    assert (tokens[:, ~ends] < layout.row_end).all() and (tokens >= 0).all()
    mapping = pipe.family.model.model.model.vocabulary_mapping
    allowed = torch.tensor([*mapping.image_tokens, pipe.family.token_id("<reserved08799>")])
    assert torch.isin(_real_ids(pipe, tokens), allowed).all()


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_and_keeps_row_ends(pipe, method):
    needs = {"draft": "needs a draft model", "eagle": "needs EAGLE head weights"}.get(METHODS[method].drafter)
    if needs is not None:  # this folder ships no draft model and no EAGLE head: refused by name
        with pytest.raises(ValueError, match=needs):
            pipe(prompt=PROMPTS[:2], method=method, progress=False)
        return
    out = pipe(prompt=PROMPTS[:2], method=method, guidance_scale=3.0, seed=1, progress=False)
    assert out.tokens.shape == (2, pipe.num_tokens) == (2, 20)
    _check_layout(pipe, out.tokens)
    assert [img.size for img in out.images] == [(8, 8)] * 2
    assert all(m.width == 256 and m.height > 256 for m in out.acceptance_maps)  # the square map, its legend below
    for s in out.stats:
        assert 1 <= s["steps"] <= s["ar_steps"] == 20


@pytest.mark.parametrize("method", ["sjd", "gsd", "lantern", "typical", "greedy"])
def test_greedy_methods_reproduce_ar_tokens(pipe, method):
    ar = pipe(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=2.0, progress=False)
    fast = pipe(prompt=PROMPTS, method=method, temperature=0, guidance_scale=2.0, progress=False, window=6)
    assert torch.equal(ar.tokens, fast.tokens)
    _check_layout(pipe, fast.tokens)


def _full_logits(hf, ids: list[int], image_ids: torch.Tensor) -> torch.Tensor:
    """Image-token logits of a plain causal forward (no cache) at every position of ``ids``."""
    hidden = hf.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    return (hidden @ hf.lm_head.weight[image_ids].T).float()


def test_guided_logits_match_separate_full_forwards(pipe):
    scale = 2.5
    family = pipe.family
    out = pipe(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=scale, progress=False)
    tokens, n = out.tokens, out.tokens.shape[1]
    prompt = family.prompt(prompts=PROMPTS)
    guided = CFGModel(family.model, scale)
    cache = guided.new_cache(len(PROMPTS), 64)
    first = guided.prefill(prompt, cache).logits
    positions = prompt.lengths[:, None] + torch.arange(n - 1)
    rest = guided.forward(tokens[:, :-1], positions, cache).logits
    adapter = torch.cat([first, rest], 1)

    hf, image_ids = family.model.model, family.model.image_ids()
    index = torch.arange(n)[None]
    for b in range(len(PROMPTS)):
        generated = image_ids[tokens[b, :-1]].tolist()
        cond_ids = prompt.ids[b, : int(prompt.lengths[b])].tolist()
        c = _full_logits(hf, cond_ids + generated, image_ids)[len(cond_ids) - 1 :]
        u = _full_logits(hf, family.model.uncond_ids + generated, image_ids)[len(family.model.uncond_ids) - 1 :]
        reference = family.layout.constrain((u + scale * (c - u))[None], index)[0]
        allowed = torch.isfinite(reference)
        assert torch.allclose(adapter[b][allowed], reference[allowed], atol=1e-4)
        assert (adapter[b][~allowed] < -1e30).all()
        assert torch.equal(reference.argmax(-1), tokens[b])  # greedy AR picked the guided argmax


def test_other_image_size_changes_grid_and_size_tokens(folder):
    family = ChameleonFamily.from_pretrained(folder, image_size=(8, 12))
    assert family.layout == TokenLayout(4, 6, row_end=N_CODES)
    h, w = family.token_id(size_token(2)), family.token_id(size_token(3))
    assert family.model.uncond_ids[1:] == [h, w]  # height first, as Lumina-mGPT writes them
    out = ImageARPipeline(family)(prompt=["a cat"], method="sjd", progress=False)
    _check_layout(ImageARPipeline(family), out.tokens)
    assert out.images[0].size == (12, 8)
    acceptance = out.acceptance_maps[0]  # a 4 x 6 map 256 px wide, its legend below
    assert acceptance.width == 256 and acceptance.height > 256 * 4 // 6
    with pytest.raises(ValueError, match="multiples of 4"):
        family.set_image_size(8, 10)


# ------------------------------------------------------------------------------------------- decoding


def test_decode_uses_the_taming_checkpoint(pipe):
    out = pipe(prompt=["a red cat"], method="ar", seed=2, progress=False)
    grid = pipe.family.layout.to_grid(out.tokens)
    pixels = pipe.family.vq.decode_code(grid)
    expected = ((pixels + 1) * 127.5).round().byte().permute(0, 2, 3, 1)
    assert np.array_equal(np.array(out.images[0]), expected[0].numpy())


def test_official_decoder_parameter_names_and_shapes():
    with torch.device("meta"):
        vq = ChameleonVQDecoder(ChameleonVQConfig())  # Chameleon's 512 px VQGAN: ch 128, ch_mult 1 1 2 2 4
    shapes = {k: tuple(v.shape) for k, v in vq.state_dict().items()}
    assert shapes["quantize.embedding.weight"] == (8192, 256)
    assert shapes["post_quant_conv.weight"] == (256, 256, 1, 1)
    assert shapes["decoder.conv_in.weight"] == (512, 256, 3, 3)
    assert shapes["decoder.mid.block_1.conv1.weight"] == (512, 512, 3, 3)
    assert shapes["decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert shapes["decoder.up.4.block.2.conv2.weight"] == (512, 512, 3, 3)
    assert shapes["decoder.up.3.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)
    assert shapes["decoder.up.1.upsample.conv.weight"] == (128, 128, 3, 3)
    assert "decoder.up.0.upsample.conv.weight" not in shapes
    assert shapes["decoder.norm_out.weight"] == (128,) and shapes["decoder.conv_out.weight"] == (3, 128, 3, 3)


def test_missing_vqgan_still_generates_tokens(folder, tmp_path):
    for f in folder.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    pipe = ImageARPipeline.from_pretrained(tmp_path)
    out = pipe.build_decoder("sjd", SamplingConfig()).generate(pipe.family.prompt(prompts=["a cat"]), pipe.num_tokens)
    _check_layout(pipe, out.tokens.cpu())
    with pytest.raises(FileNotFoundError, match="vqgan.ckpt"):
        pipe(prompt=["a cat"], progress=False)
    assert pipe.family.codebook().shape == (N_CODES + 1, 9)  # the HF checkpoint's own quantiser


# ------------------------------------------------------------------------------------------- checkpoints


def _copy_with_state(folder, target, edit) -> None:
    for f in folder.iterdir():
        if f.is_file():
            shutil.copy(f, target / f.name)
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})


def test_lumina_grouped_qk_norm_is_expanded(folder, tmp_path):
    stored = {}

    def group(state):  # Lumina-mGPT keeps [model_parallel_size, head_dim]; here 2 groups of 2 heads
        for key in [k for k in state if ".q_norm." in k or ".k_norm." in k]:
            stored[key] = torch.randn(2, state[key].shape[1])
            state[key] = stored[key]

    _copy_with_state(folder, tmp_path, group)
    family = load_family(tmp_path)
    params = dict(family.model.model.named_parameters())
    assert stored and all(torch.equal(params[k], v.repeat_interleave(2, 0)) for k, v in stored.items())


def test_mismatched_checkpoint_names_key_and_shapes(folder, tmp_path):
    def shrink(state):
        state["model.layers.0.mlp.up_proj.weight"] = torch.zeros(48, 32)

    _copy_with_state(folder, tmp_path, shrink)
    with pytest.raises(ValueError, match=r"up_proj.weight: checkpoint \(48, 32\) vs model \(64, 32\)"):
        ImageARPipeline.from_pretrained(tmp_path)


def test_other_folders_fail_clearly(folder, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="no recognisable"):
        ImageARPipeline.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'llama'"):
        ImageARPipeline.from_pretrained(tmp_path, family="chameleon")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        ImageARPipeline.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(class_labels=[3]), "class_labels"),
        (dict(prompt=["a cat"], guidance_scale=-1.0), "guidance_scale"),
        (dict(prompt=[3]), "string"),
    ],
)
def test_bad_input(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(progress=False, **kwargs)


# ------------------------------------------------------------------------------------------------- Anole


@pytest.fixture(scope="module")
def anole(tmp_path_factory):
    # Anole is told apart from Lumina-mGPT by its name; the weights are the same architecture.
    folder = _save_tiny_chameleon(tmp_path_factory.mktemp("anole") / "Anole-tiny-hf")
    return ImageARPipeline.from_pretrained(folder)


def test_anole_layout_has_no_row_ends_or_size_tokens(anole, folder):
    from mmaccel.image.anole import AnoleFamily

    family = anole.family
    assert isinstance(family, AnoleFamily) and family.layout == TokenLayout(4, 4)  # 8 px / 2 px per code, no row ends
    assert anole.model.vocab_size == N_CODES
    vocab = json.loads((folder / "config.json").read_text())["vocabulary_map"]
    prompt = family.prompt(prompts=["a red cat"])
    ids = prompt.ids[0, : int(prompt.lengths[0])].tolist()
    # LANTERN's Anole prompt: <bos> text <reserved08706> <racm3:break>, no template; uncond <bos> <racm3:break>
    assert ids == [0, vocab["a"], vocab["red"], vocab["cat"], vocab["<reserved08706>"], vocab["<racm3:break>"]]
    uncond = family.model.unconditional_prompt(prompt)
    assert uncond.ids.tolist() == [[0, vocab["<racm3:break>"]]]
    real = _real_ids(anole, torch.arange(N_CODES)).tolist()
    assert real == [vocab[_image_name(c)] for c in range(N_CODES)]
    assert family.codebook().shape == (N_CODES, 8) and family.token_embeddings().shape == (N_CODES, 32)
    # The same folder under another name is Lumina-mGPT's layout unless the family is named.
    assert load_family(folder).name == "chameleon" and load_family(folder, family="anole").name == "anole"


@pytest.mark.parametrize("method", ["ar", "sjd", "gsd", "lantern", "typical"])
def test_anole_methods_generate_image_tokens_only(anole, method):
    out = anole(prompt=PROMPTS[:2], method=method, guidance_scale=3.0, seed=1, progress=False)
    assert out.tokens.shape == (2, 16) and (out.tokens >= 0).all() and (out.tokens < N_CODES).all()
    assert [img.size for img in out.images] == [(8, 8)] * 2


@pytest.mark.parametrize("method", ["sjd", "gsd", "lantern", "greedy"])
def test_anole_greedy_methods_reproduce_ar_tokens(anole, method):
    ar = anole(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=2.0, progress=False)
    fast = anole(prompt=PROMPTS, method=method, temperature=0, guidance_scale=2.0, progress=False, window=6)
    assert torch.equal(ar.tokens, fast.tokens)


# ----------------------------------------------------------------------------------- a user-given draft


@pytest.fixture(scope="module")
def with_draft(folder, tmp_path_factory):
    draft = _save_tiny_chameleon(tmp_path_factory.mktemp("draft"), hidden=16, layers=1, seed=5)
    return ImageARPipeline.from_pretrained(folder, draft=draft)


@pytest.mark.parametrize("method", ["draft", "lantern-draft", "lantern++"])
def test_draft_checkpoint_drives_the_draft_methods(with_draft, method):
    out = with_draft(prompt=PROMPTS[:2], method=method, guidance_scale=2.0, seed=3, progress=False)
    _check_layout(with_draft, out.tokens)
    assert all(s["batch_draft_nfe"] > 0 for s in out.stats)


def test_greedy_exact_rule_with_a_draft_reproduces_ar_tokens(with_draft):
    ar = with_draft(prompt=PROMPTS, method="ar", temperature=0, guidance_scale=2.0, progress=False)
    fast = with_draft(prompt=PROMPTS, method="draft", temperature=0, guidance_scale=2.0, progress=False)
    assert torch.equal(ar.tokens, fast.tokens)
    assert with_draft.draft is not with_draft.model and with_draft.draft.model.config.hidden_size == 16


def test_draft_of_another_layout_is_refused(folder, tmp_path):
    from mmaccel.image.pipeline import load_draft

    target = ChameleonFamily.from_pretrained(folder, image_size=(8, 12))  # the draft folder defaults to 8 x 8
    with pytest.raises(ValueError, match=r"draft .* generates TokenLayout\(height=4, width=4"):
        load_draft(target, folder)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="'llama'"):  # a draft is loaded as the target's family
        ImageARPipeline.from_pretrained(folder, draft=tmp_path)
