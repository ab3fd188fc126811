"""Random-weight models of every image family at three sizes, for benchmarks and tests, built offline.

``real`` is each family's released architecture (layer count, widths, heads, vocabularies, codebook and token
grid), ``small`` the same architecture scaled down so a loaded 2-core CPU runs all five families in minutes (4
layers of width 256 with the family's head/FFN/key-value ratios, an 8 x 8 grid, a quarter of the released
codebook: sampling and acceptance work over the image vocabulary is 4x smaller than at real size), and ``tiny``
the size of the family tests. Only the shapes are real: every weight is random.

================  ===========================================================================================
family            ``real``: what it reproduces, and where the numbers come from
================  ===========================================================================================
``llamagen``      LlamaGen c2i GPT-XL at 384 px (``c2i_XL_384.pt``): 36 layers, 20 heads, width 1280, 16384
                  VQ-16 codes, a 24 x 24 grid, 1000 classes (LlamaGen ``gpt.py`` ``GPT_XL``; ~775M parameters).
``llamagen-t2i``  LlamaGen t2i GPT-XL stage 2 at 512 px (``t2i_XL_stage2_512.pt``): the same GPT with 120
                  caption slots of width 2048 (flan-t5-xl's ``d_model``) and a 32 x 32 grid. The T5 encoder is
                  **one** flan-t5-xl-shaped layer (``d_model`` 2048, 32 heads, ``d_ff`` 5120) instead of 24: it
                  runs once per prompt, outside the timed generation, and the GPT sees only its output width.
``janus``         Janus-Pro-1B (``deepseek-community/Janus-Pro-1B``): a Llama of width 2048, 24 layers, 16 heads,
                  FFN 5632, text vocabulary 102400 (Janus-Pro paper, Table 1; DeepSeek-LLM 1.3B shapes), the
                  SigLIP-L/16 384 px understanding encoder and the 16384-code VQ-16 generation path
                  (transformers' ``JanusVisionConfig`` / ``JanusVQVAEConfig`` defaults with width 2048): 24 x 24.
``chameleon``     Lumina-mGPT-7B-768 = Chameleon 7B (transformers' ``ChameleonConfig`` defaults: width 4096,
                  32 layers, 32 heads, FFN 11008, vocabulary 65536 with 8192 VQGAN codes) at 768 px: 48 x 48
                  codes, each row closed by an end-of-line token.
``emu3``          Emu3-Gen 8B (transformers' ``Emu3Config`` defaults: width 4096, 32 layers, 32 heads with 8
                  key-value heads, FFN 14336, vocabulary 184622 of which 32768 visual tokens, VQ spatial factor
                  8) at its default 720 x 720 image area: 90 x 90 codes plus end-of-line tokens.
================  ===========================================================================================

Text tokenizers are offline word-level ones over a few hundred words (prompts are a handful of tokens, shorter
than the released BPE tokenizers would make them); their special tokens are the families' own names.

:func:`build_family` builds a family object directly on a device in a dtype (how real sizes are built: no
float32 copy of a 7B model in CPU memory); :func:`save_family` writes it in the family's own checkpoint layout,
so :meth:`ImageARPipeline.from_pretrained <mmaccel.image.pipeline.ImageARPipeline.from_pretrained>` loads it
through the real loading path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

SIZES = ("tiny", "small", "real")
FAMILY_NAMES = ("llamagen", "llamagen-t2i", "janus", "chameleon", "emu3")

#: What ``real`` stands for, per family (recorded beside every benchmark row).
REAL_MODELS = {
    "llamagen": "LlamaGen c2i GPT-XL 384px",
    "llamagen-t2i": "LlamaGen t2i GPT-XL stage2 512px (+1-layer flan-t5-xl-width T5)",
    "janus": "Janus-Pro-1B",
    "chameleon": "Lumina-mGPT-7B-768 (Chameleon 7B)",
    "emu3": "Emu3-Gen 8B",
}

#: Prompts of different lengths, so batched rows are padded as in real use.
PROMPTS = [
    "a red cat sitting on a blue sofa",
    "a green dog running in the rain",
    "a small house by the sea at sunset",
    "a big red apple on a wooden table",
    "a photo of a blue car in the city at night",
    "two cats sleeping in the sun",
    "a bowl of fruit on a table",
    "a mountain lake with a small boat and trees",
]
_TEMPLATE_WORDS = "generate an image of according to the following prompt".split()
WORDS = sorted({w for p in PROMPTS for w in p.split()} | set(_TEMPLATE_WORDS) | {":", ",", ".", "*"})

# --------------------------------------------------------------------------------------------- shapes

_LLAMAGEN = {
    "tiny": dict(gpt=dict(dim=32, n_layer=2, n_head=2, multiple_of=16), codes=64, classes=10, grid=4, t2i_grid=4),
    "small": dict(gpt=dict(dim=256, n_layer=4, n_head=4), codes=4096, classes=1000, grid=8, t2i_grid=8),
    # GPT-XL; c2i at 384 px (24 x 24), t2i stage 2 at 512 px (32 x 32).
    "real": dict(gpt=dict(dim=1280, n_layer=36, n_head=20), codes=16384, classes=1000, grid=24, t2i_grid=32),
}
_T5 = {  # caption width = T5 d_model; one encoder layer at every size (it runs once per prompt)
    "tiny": dict(d_model=24, d_kv=8, d_ff=32, num_heads=2),
    "small": dict(d_model=128, d_kv=32, d_ff=256, num_heads=4),
    "real": dict(d_model=2048, d_kv=64, d_ff=5120, num_heads=32),  # flan-t5-xl's layer shape
}
_JANUS = {
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=0, max_position_embeddings=256),
        vision=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=16, depth=1),
        vq=dict(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32, channel_multiplier=[1, 1, 2],
                num_res_blocks=1),
    ),
    "small": dict(
        text=dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=4096, max_position_embeddings=1024),
        vision=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=128, patch_size=16,
                    depth=2),
        vq=dict(embed_dim=8, num_embeddings=4096, latent_channels=32, base_channels=32, channel_multiplier=[1, 1, 2],
                num_res_blocks=1),
    ),
    "real": dict(
        text=dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
                  num_key_value_heads=16, vocab_size=102400, max_position_embeddings=16384),
        vision=dict(image_size=384, patch_size=16),  # SigLIP-L/16 (JanusVisionConfig defaults)
        vq=dict(embed_dim=8, num_embeddings=16384),  # VQ-16 (JanusVQVAEConfig defaults)
    ),
}  # fmt: skip
_CHAMELEON = {
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=0, max_position_embeddings=256),
        vq=dict(embed_dim=8, num_embeddings=16, latent_channels=8, resolution=8, base_channels=32,
                channel_multiplier=[1, 2], num_res_blocks=1, attn_resolutions=[]),
        image_size=8,
    ),
    "small": dict(
        text=dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=1024 + 2048, max_position_embeddings=1024),
        vq=dict(embed_dim=32, num_embeddings=2048, latent_channels=32, resolution=128, base_channels=32,
                channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=1, attn_resolutions=[]),
        image_size=128,
    ),
    "real": dict(
        text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, vocab_size=65536, max_position_embeddings=4096),
        vq=dict(num_embeddings=8192),  # Chameleon's VQGAN (ChameleonVQVAEConfig defaults, 16x downsampling)
        image_size=768,
    ),
}  # fmt: skip
_EMU3 = {
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=0, max_position_embeddings=256),
        vq=dict(codebook_size=32, embed_dim=4, latent_channels=4, base_channels=32, channel_multiplier=[1, 1],
                num_res_blocks=1, attn_resolutions=[], temporal_downsample_factor=2, hidden_size=32),
        image_area=8 * 8,
    ),
    "small": dict(
        text=dict(hidden_size=256, intermediate_size=896, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=1, vocab_size=4096 + 8192, max_position_embeddings=1024),
        vq=dict(codebook_size=8192, embed_dim=4, latent_channels=4, base_channels=32,
                channel_multiplier=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[], hidden_size=32),
        image_area=64 * 64,
    ),
    "real": dict(
        text=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=184622, max_position_embeddings=9216),
        vq=dict(codebook_size=32768),  # Emu3's VQ (Emu3VQVAEConfig defaults, spatial factor 8)
        image_area=720 * 720,
    ),
}  # fmt: skip


def check_size(size: str) -> str:
    """``size`` if it is one of :data:`SIZES`, else a ValueError naming the choices."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {list(SIZES)}")
    return size


def check_family(name: str) -> str:
    """``name`` if it is one of :data:`FAMILY_NAMES`, else a ValueError naming the choices."""
    if name not in FAMILY_NAMES:
        raise ValueError(f"unknown image family {name!r}; choose one of {list(FAMILY_NAMES)}")
    return name


# ------------------------------------------------------------------------------------------- weights


def randomize_(module: nn.Module, seed: int, skip: Iterable[str] = ()) -> None:
    """Redraw every ``Linear`` weight as N(0, 1 / fan_in) and every ``Embedding`` as N(0, 1), in place.

    The families' own initialisations do not make usable random models: LlamaGen zeroes its output head (every
    token ties), and the 0.02 standard deviation of transformers' init gives near-uniform logits at small widths.
    With unit-scale activations into every (pre-normed) head, logits have unit scale at every size, so random
    models of all sizes sample from comparable, non-degenerate distributions. Modules whose qualified name starts
    with a prefix in ``skip`` (encoders the image generation never runs) keep their weights.
    """
    skip = tuple(skip)
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, sub in module.named_modules():
            if skip and name.startswith(skip):
                continue
            if isinstance(sub, (nn.Linear, nn.Embedding)) and sub.weight.device.type != "meta":
                weight = sub.weight
                if weight.device not in generators:
                    generators[weight.device] = torch.Generator(device=weight.device).manual_seed(seed)
                std = 1.0 if isinstance(sub, nn.Embedding) else weight.shape[1] ** -0.5
                weight.normal_(0.0, std, generator=generators[weight.device])


def _hf_model(cls: type, config: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """A transformers model built directly on ``device`` in ``dtype`` (no float32 copy on the CPU first)."""
    with torch.device(device):
        return cls._from_config(config, dtype=dtype).eval()


# ----------------------------------------------------------------------------------------- tokenizers


def word_tokenizer(
    vocab: dict[str, int],
    *,
    specials: list[str],
    unk: str,
    bos: str | None = None,
    eos: str | None = None,
    pad: str | None = None,
    template: str | None = None,
    split_digits: bool = False,
    extra_special_tokens: dict[str, str] | None = None,
) -> Any:
    """An offline lower-casing word-level ``PreTrainedTokenizerFast`` over ``vocab`` (ids may have gaps).

    ``specials`` are split out of any text (so ``"<bos>a cat"`` is two tokens); ``template`` is a
    ``TemplateProcessing`` single-sequence template (e.g. ``"<bos> $A"``) for tokenizers that add special tokens.
    """
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.normalizer = normalizers.Lowercase()
    splitters = [pre_tokenizers.Whitespace()]
    if split_digits:  # Emu3 reads its "H*W" size as single digits, as its BPE splits it
        splitters.append(pre_tokenizers.Digits(individual_digits=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence(splitters)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if template is not None:
        used = [t for t in specials if t in template.split()]
        backend.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(t, vocab[t]) for t in used]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=extra_special_tokens or {},
    )


def _ids(tokens: Iterable[str], start: int = 0) -> dict[str, int]:
    return {t: start + i for i, t in enumerate(dict.fromkeys(tokens))}


# ----------------------------------------------------------------------------------------- LlamaGen


def _llamagen_gpt(size: str, t2i: bool, device: torch.device, seed: int) -> nn.Module:
    from ..llamagen import GPTConfig, LlamaGenGPT

    shape = _LLAMAGEN[size]
    grid = shape["t2i_grid" if t2i else "grid"]
    extra = dict(model_type="t2i", cls_token_num=120, caption_dim=_T5[size]["d_model"]) if t2i else {}
    config = GPTConfig(
        **shape["gpt"], vocab_size=shape["codes"], block_size=grid * grid, num_classes=shape["classes"], **extra
    )
    with torch.device(device):
        gpt = LlamaGenGPT(config)
    randomize_(gpt, seed)
    return gpt.eval()


def _llamagen_vq(size: str, device: torch.device) -> nn.Module:
    from mmaccel.models.vq import VQConfig, VQModel

    codes = _LLAMAGEN[size]["codes"]
    if size == "real":
        config = VQConfig.named("VQ-16")
    else:  # VQ-tiny's layers with the size's codebook: the VQ only supplies the codebook here
        config = VQConfig(**{**_vq_named("VQ-tiny"), "codebook_size": codes, "codebook_embed_dim": 8})
    with torch.device(device):
        return VQModel(config).eval()


def _vq_named(name: str) -> dict:
    from mmaccel.models.vq import NAMED_CONFIGS

    return dict(NAMED_CONFIGS[name])


def cast_llamagen(gpt: nn.Module, dtype: torch.dtype) -> None:
    """Cast a LlamaGen GPT to ``dtype`` in place, keeping its rotary table in float32 (``apply_rope`` builds
    complex numbers from it, which bfloat16 has not; LlamaGen keeps its ``freqs_cis`` in float32 too)."""
    rope = gpt.rope.float()
    gpt.to(dtype)
    gpt.rope = rope


def _t5_encoder(size: str, device: torch.device, seed: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    from ..llamagen_t2i import T5CaptionEncoder

    vocab = _ids(["<pad>", "</s>", "<unk>", *WORDS])
    tokenizer = word_tokenizer(vocab, specials=["<pad>", "</s>", "<unk>"], unk="<unk>", eos="</s>", pad="<pad>",
                               template="$A </s>")  # fmt: skip
    config = T5Config(vocab_size=len(vocab), num_layers=1, is_encoder_decoder=False, **_T5[size])
    torch.manual_seed(seed)
    with torch.device(device):
        encoder = T5EncoderModel(config).float().eval()  # T5CaptionEncoder runs T5 in float32, as it loads it
    return T5CaptionEncoder(tokenizer, encoder, 120)


def _build_llamagen(size: str, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    from ..llamagen import LlamaGenModel
    from ..llamagen_c2i import LlamaGenC2IFamily

    gpt = _llamagen_gpt(size, False, device, seed)
    cast_llamagen(gpt, dtype)
    return LlamaGenC2IFamily(LlamaGenModel(gpt), _llamagen_vq(size, device))


def _build_llamagen_t2i(size: str, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    from ..llamagen_t2i import LlamaGenT2IFamily, LlamaGenT2IModel

    gpt = _llamagen_gpt(size, True, device, seed)
    cast_llamagen(gpt, dtype)
    return LlamaGenT2IFamily(LlamaGenT2IModel(gpt), _llamagen_vq(size, device), _t5_encoder(size, device, seed + 1))


# -------------------------------------------------------------------------------------------- Janus

_JANUS_BOS, _JANUS_EOS, _JANUS_PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
_JANUS_SPECIALS = ["<unk>", _JANUS_BOS, _JANUS_EOS, _JANUS_PAD, "<image_placeholder>", "<begin_of_image>",
                   "<end_of_image>", "<|User|>", "<|Assistant|>"]  # fmt: skip


def _build_janus(size: str, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    from transformers import (
        JanusConfig,
        JanusForConditionalGeneration,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    from ..janus import JanusFamily

    shape = _JANUS[size]
    vocab = _ids([*_JANUS_SPECIALS, *WORDS])
    tokenizer = word_tokenizer(
        vocab, specials=_JANUS_SPECIALS, unk="<unk>", bos=_JANUS_BOS, eos=_JANUS_EOS, pad=_JANUS_PAD,
        template=f"{_JANUS_BOS} $A",  # Janus' Llama tokenizer puts BOS in front of every text
        extra_special_tokens={"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>",
                              "eoi_token": "<end_of_image>"},
    )  # fmt: skip
    text = dict(shape["text"], vocab_size=max(shape["text"]["vocab_size"], len(vocab)))
    hidden = text["hidden_size"]
    vision = JanusVisionConfig(**shape["vision"], projection_dim=hidden)
    grid = vision.image_size // vision.patch_size
    vision.num_image_tokens = grid * grid
    vq = JanusVQVAEConfig(**shape["vq"], projection_dim=hidden, image_token_embed_dim=hidden)
    config = JanusConfig(
        text_config=LlamaConfig(**text, bos_token_id=vocab[_JANUS_BOS], pad_token_id=vocab[_JANUS_PAD],
                                eos_token_id=vocab[_JANUS_EOS]),
        vision_config=vision,
        vq_config=vq,
        image_token_id=vocab["<image_placeholder>"],
    )  # fmt: skip
    model = _hf_model(JanusForConditionalGeneration, config, device, dtype)
    randomize_(model, seed, skip=("model.vision_model", "model.vqmodel", "model.aligner"))
    # The converted checkpoints' generation config names Janus' pad and image start tokens.
    model.generation_config.pad_token_id = vocab[_JANUS_PAD]
    model.generation_config.boi_token_id = vocab["<begin_of_image>"]
    return JanusFamily(model, tokenizer)


# ---------------------------------------------------------------------------------------- Chameleon


def _image_name(code: int) -> str:
    """Chameleon's name of image token ``code``: IMGIMG + the code's digits as letters A..J + Z."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def _build_chameleon(size: str, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    from ..chameleon import IMAGE_START, NEW_LINE, SEPARATOR, ChameleonFamily, size_token

    shape = _CHAMELEON[size]
    codes = shape["vq"]["num_embeddings"]
    side = shape["image_size"]
    downsample = 2 ** (len(shape["vq"].get("channel_multiplier", [1, 1, 2, 2, 4])) - 1)
    sides = range(1, side // (2 * downsample) + 1)  # size tokens up to the image side (units of 2 codes)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<eoss>", IMAGE_START, SEPARATOR, NEW_LINE, "<image>"]
    specials += [size_token(n) for n in sides]
    text = _ids([*specials, *WORDS, f"{side}x{side}"])
    vocab_size = max(shape["text"]["vocab_size"], len(text) + codes)
    # Image tokens take the top ids; the text tokenizer never produces them.
    vocabulary_map = {**text, **{_image_name(c): vocab_size - codes + c for c in range(codes)}}
    tokenizer = word_tokenizer(text, specials=specials, unk="<unk>", bos="<s>", eos="</s>", pad="<pad>")
    config = ChameleonConfig(
        **dict(shape["text"], vocab_size=vocab_size),
        bos_token_id=text["<s>"], pad_token_id=text["<pad>"], eos_token_id=text["</s>"],
        vocabulary_map=vocabulary_map, vq_config=shape["vq"],
    )  # fmt: skip
    model = _hf_model(ChameleonForConditionalGeneration, config, device, dtype)
    randomize_(model, seed, skip=("model.vqmodel",))
    return ChameleonFamily(model, tokenizer, image_size=side)


# --------------------------------------------------------------------------------------------- Emu3

_EMU3_SPECIAL = {
    "pad": "<|endoftext|>",
    "bos": "<|extra_203|>",
    "eos": "<|extra_204|>",
    "boi": "<|image start|>",
    "eoi": "<|image end|>",
    "wrapper": "<|image token|>",
    "eol": "<|extra_200|>",
    "eof": "<|extra_201|>",
    "image": "<image>",
}


def _build_emu3(size: str, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    from transformers import Emu3Config, Emu3ForConditionalGeneration

    from ..emu3 import Emu3Family

    shape = _EMU3[size]
    codes = shape["vq"]["codebook_size"]
    s = _EMU3_SPECIAL
    text = _ids(["[UNK]", *map(str, range(10)), *WORDS, *s.values()])
    vocab_size = max(shape["text"]["vocab_size"], len(text) + codes)
    # Visual tokens take the top ids, as in Emu3-Gen (151854 .. 184621).
    visual = {f"<|visual token {c:06d}|>": vocab_size - codes + c for c in range(codes)}
    tokenizer = word_tokenizer(
        text, specials=list(s.values()), unk="[UNK]", bos=s["bos"], eos=s["eos"], pad=s["pad"], split_digits=True,
        extra_special_tokens={"boi_token": s["boi"], "eoi_token": s["eoi"], "image_token": s["image"],
                              "image_wrapper_token": s["wrapper"], "eof_token": s["eof"]},
    )  # fmt: skip
    config = Emu3Config(
        text_config=dict(shape["text"], vocab_size=vocab_size, pad_token_id=text[s["pad"]],
                         bos_token_id=text[s["bos"]], eos_token_id=text[s["eos"]]),
        vq_config=shape["vq"],
        vocabulary_map={**text, **visual},
        image_area=shape["image_area"],
    )  # fmt: skip
    model = _hf_model(Emu3ForConditionalGeneration, config, device, dtype)
    randomize_(model, seed, skip=("model.vqmodel",))
    return Emu3Family(model, tokenizer, image_area=shape["image_area"])


_BUILDERS = {
    "llamagen": _build_llamagen,
    "llamagen-t2i": _build_llamagen_t2i,
    "janus": _build_janus,
    "chameleon": _build_chameleon,
    "emu3": _build_emu3,
}

# ------------------------------------------------------------------------------------------------ API


def build_family(
    name: str, size: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Any:
    """The random-weight ``name`` family at ``size``, built directly on ``device`` with its transformer in
    ``dtype`` (the VQ and T5 stay float32, as the families load them)."""
    check_family(name)
    check_size(size)
    torch.manual_seed(seed)  # the few parameters randomize_ leaves (norms, VQ convs) are seeded too
    return _BUILDERS[name](size, torch.device(device), dtype, seed)


def lm_module(family: Any) -> nn.Module:
    """The autoregressive transformer that runs at every generation step (the VQ and text encoders excluded)."""
    if family.name in ("llamagen", "llamagen-t2i"):
        return family.model.gpt
    if family.name == "chameleon":
        return family.model.model
    return family.hf_model


def count_parameters(family: Any) -> tuple[int, int]:
    """(all parameters the family holds, parameters of the per-step transformer without image/vision encoders)."""
    lm = lm_module(family)
    modules: list[nn.Module] = [lm]
    vq = getattr(family, "vq", None)  # Janus', Emu3's and Chameleon's VQ live inside the transformers model
    if isinstance(vq, nn.Module) and not any(vq is m for m in lm.modules()):
        modules.append(vq)
    if getattr(family, "text", None) is not None:  # LlamaGen t2i's T5 encoder
        modules.append(family.text.encoder)
    total = sum(p.numel() for m in modules for p in m.parameters())
    encoders = ("model.vqmodel", "model.vision_model", "model.aligner")
    core = sum(p.numel() for n, p in lm.named_parameters() if not n.startswith(encoders))
    return total, core


def cast_family(family: Any, dtype: torch.dtype) -> Any:
    """Cast the family's per-step transformer to ``dtype`` (LlamaGen keeps its rotary table in float32)."""
    lm = lm_module(family)
    if family.name in ("llamagen", "llamagen-t2i"):
        cast_llamagen(lm, dtype)
    else:
        lm.to(dtype)
    return family


def save_family(family: Any, folder: str | os.PathLike) -> Path:
    """Write ``family`` into ``folder`` in its own checkpoint layout (what its ``from_pretrained`` reads).

    For Chameleon the folder name should carry the resolution (``...-768``), as Lumina-mGPT releases do: its
    loader takes the image size from there.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if family.name in ("llamagen", "llamagen-t2i"):
        gpt = family.model.gpt
        state = {k: v.detach().cpu().contiguous() for k, v in gpt.state_dict().items()}
        save_file(state, str(folder / "gpt.safetensors"))
        gpt.config.save(folder / "gpt_config.json")
        vq_state = {k: v.detach().cpu().contiguous() for k, v in family.vq.state_dict().items()}
        save_file(vq_state, str(folder / "vq.safetensors"))
        (folder / "vq_config.json").write_text(json.dumps(family.vq.config.to_dict(), indent=2))
        if family.name == "llamagen-t2i":
            family.text.tokenizer.save_pretrained(folder / "t5")
            family.text.encoder.save_pretrained(folder / "t5")
        return folder
    lm_module(family).save_pretrained(folder)
    family.tokenizer.save_pretrained(folder)
    return folder


def folder_name(name: str, size: str) -> str:
    """A checkpoint folder name for ``name`` at ``size`` (Chameleon's carries the resolution its loader reads)."""
    if name == "chameleon":
        return f"lumina-mgpt-random-{_CHAMELEON[size]['image_size']}" if size == "real" else f"chameleon-{size}"
    return f"{name}-{size}"


def conditions(family: Any, batch_size: int) -> dict[str, list]:
    """Pipeline conditions for ``batch_size`` images: class labels or prompts of mixed lengths."""
    if family.conditioning == "class":
        return {"class_labels": [i % family.num_classes for i in range(batch_size)]}
    return {"prompts": [PROMPTS[i % len(PROMPTS)] for i in range(batch_size)]}


__all__ = [
    "FAMILY_NAMES",
    "PROMPTS",
    "REAL_MODELS",
    "SIZES",
    "build_family",
    "cast_family",
    "cast_llamagen",
    "check_family",
    "check_size",
    "conditions",
    "count_parameters",
    "folder_name",
    "lm_module",
    "randomize_",
    "save_family",
    "word_tokenizer",
]
