"""A tiny random Emu3ForConditionalGeneration folder (official parameter names, offline word-level tokenizer with
Emu3's special-token names), for the Emu3 video tests."""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL = {
    "pad_token": "<|endoftext|>", "bos_token": "<|extra_203|>", "eos_token": "<|extra_204|>",
    "boi_token": "<|image start|>", "eoi_token": "<|image end|>", "image_wrapper_token": "<|image token|>",
    "eol_token": "<|extra_200|>", "eof_token": "<|extra_201|>", "image_token": "<image>",
}  # fmt: skip
WORDS = ("a", "red", "ball", "rolls", "left", "blue", "cube", "spins", "slowly", "*", ",", ".")


def save_tiny_emu3(folder: str | Path, n_codes: int = 16, seed: int = 0) -> Path:
    """Write the checkpoint and tokenizer to ``folder``; the VQ has spatial factor 2 and temporal factor 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Emu3Config, Emu3ForConditionalGeneration, PreTrainedTokenizerFast

    folder = Path(folder)
    torch.manual_seed(seed)
    names = [
        "[UNK]",
        *map(str, range(10)),
        *WORDS,
        *SPECIAL.values(),
        *(f"<|visual token {c:06d}|>" for c in range(n_codes)),
    ]
    vocab = {name: i for i, name in enumerate(names)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    # "4*4" splits into digits and "*", as Emu3's BPE splits it.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    plain = {k: SPECIAL[k] for k in ("pad_token", "bos_token", "eos_token")}
    extra = {k: v for k, v in SPECIAL.items() if k not in plain}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", extra_special_tokens=extra, **plain
    )
    tokenizer.add_tokens(names[names.index(SPECIAL["pad_token"]) :], special_tokens=True)
    tokenizer.save_pretrained(folder)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=vocab[SPECIAL["pad_token"]],
        bos_token_id=vocab[SPECIAL["bos_token"]],
        eos_token_id=vocab[SPECIAL["eos_token"]],
    )
    vq = dict(
        codebook_size=n_codes,
        embed_dim=4,
        latent_channels=4,
        base_channels=32,
        channel_multiplier=[1, 1],
        num_res_blocks=1,
        attn_resolutions=[],
        temporal_downsample_factor=2,
        hidden_size=32,
    )
    config = Emu3Config(text_config=text, vq_config=vq, vocabulary_map=vocab)
    Emu3ForConditionalGeneration(config).save_pretrained(folder)
    return folder
