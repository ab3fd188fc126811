"""MusicGen proper (``transformers.MusicgenForConditionalGeneration``: a T5 text encoder, the codec LM decoder with
the delay pattern, EnCodec) through the stream decoder, with MusicGen's classifier-free guidance.

The decoder starts from one BOS step (the pad id in every codebook) at position 0, as the class's own ``generate``
does; audio step ``s`` sits at position ``s + 1``. The text encoder runs once, in :meth:`prefill`. Guidance follows
``generate`` exactly: the batch is doubled with a null condition (zero encoder states, zero encoder mask), both
halves receive the same tokens, and ``logits = u + s * (c - u)`` on the raw logits, before temperature.

The self-attention keys live in a :class:`~mmaccel.models.cache.SlotCache` (per-sample positions, so every sample
advances at its own pace); the cross-attention keys are computed once and reused, in the same
``EncoderDecoderCache`` the class uses (:class:`CrossAttentionSlotCache`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    T5Config,
)
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from mmaccel.models.base import ModelOutput
from mmaccel.models.cache import SlotCache
from mmaccel.models.hf import slot_forward

from .musicgen import MusicgenStreams


class CrossAttentionSlotCache(EncoderDecoderCache):
    """An encoder-decoder cache whose self-attention half is a :class:`SlotCache` (what ``slot_forward`` drives);
    the cross-attention half is filled by the first forward and reused after it."""

    def __init__(self, max_length: int):
        super().__init__(SlotCache(max_length), DynamicCache())

    def set_positions(self, positions: torch.Tensor) -> None:
        self.self_attention_cache.set_positions(positions)

    def attention_mask(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.self_attention_cache.attention_mask(positions, dtype)

    def reorder(self, rows: torch.Tensor) -> None:
        self.self_attention_cache.reorder(rows)
        self.cross_attention_cache.reorder_cache(rows)


@dataclass
class TextPrompt:
    """Tokenised text for the encoder: right-padded ``ids`` ``[B, S]`` and their ``mask`` ``[B, S]``.

    ``lengths`` is the decoder's prompt length, one BOS step for every sample."""

    ids: torch.Tensor
    mask: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        return torch.ones(self.ids.shape[0], dtype=torch.long, device=self.ids.device)

    def to(self, device) -> TextPrompt:
        return TextPrompt(self.ids.to(device), self.mask.to(device))


class MusicgenTextStreams(MusicgenStreams):
    """A ``MusicgenForConditionalGeneration`` (official checkpoints load unchanged) as a stream model:
    ``guidance_scale`` as in ``generate`` (``None``: the checkpoint's generation config; ``<= 1``: no guidance)."""

    def __init__(self, model: MusicgenForConditionalGeneration, guidance_scale: float | None = None):
        if guidance_scale is None:
            guidance_scale = getattr(model.generation_config, "guidance_scale", None) or 1.0
        self.full = model.eval()
        self.guidance_scale = float(guidance_scale)
        super().__init__(model.decoder, nn.Identity(), stop_token=None)
        self.pad_id = model.config.decoder.decoder_start_token_id
        self.stop_lag = 0
        self.encoder_states: torch.Tensor | None = None
        self.encoder_mask: torch.Tensor | None = None

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1

    def new_cache(self, batch_size: int, max_length: int) -> CrossAttentionSlotCache:
        return CrossAttentionSlotCache(max_length)

    def _run(self, embeds: torch.Tensor, positions: torch.Tensor, cache, output_hidden: bool):
        if self.guided:  # cond rows first, then the null-condition rows with the same tokens
            embeds, positions = torch.cat([embeds, embeds]), torch.cat([positions, positions])
        self.positions.positions = positions
        try:
            out = slot_forward(
                self.model,
                positions,
                cache,
                inputs_embeds=embeds,
                encoder_hidden_states=self.encoder_states,
                encoder_attention_mask=self.encoder_mask,
                output_hidden_states=output_hidden,
            )
        finally:
            self.positions.positions = None
        rows, t = positions.shape
        logits = out.logits.view(rows, self.num_streams, t, -1).transpose(1, 2).float()
        hidden = out.hidden_states[-1] if output_hidden else None
        if self.guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + (cond - uncond) * self.guidance_scale
            hidden = hidden.chunk(2)[0] if hidden is not None else None
        return ModelOutput(logits, hidden)

    @torch.no_grad()
    def encode(self, prompt: TextPrompt) -> None:
        """Run the text encoder once and keep its states (doubled with the null condition under guidance)."""
        ids, mask = prompt.ids.to(self.device), prompt.mask.to(self.device)
        vocab = self.full.text_encoder.get_input_embeddings().num_embeddings
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise ValueError(f"prompt: text token ids must lie in [0, {vocab})")
        states = self.full.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        if hasattr(self.full, "enc_to_dec_proj"):
            states = self.full.enc_to_dec_proj(states)
        if self.guided:
            states, mask = torch.cat([states, torch.zeros_like(states)]), torch.cat([mask, torch.zeros_like(mask)])
        self.encoder_states, self.encoder_mask = states * mask[..., None], mask

    def prefill(self, prompt: TextPrompt, cache, output_hidden: bool = False) -> ModelOutput:
        self.encode(prompt)
        self.lengths = prompt.lengths.to(self.device)
        bos = torch.full((prompt.batch_size, 1, self.num_streams), self.pad_id, dtype=torch.long, device=self.device)
        tables = self.model.model.decoder.embed_tokens
        embeds = sum(tables[k](bos[..., k]) for k in range(self.num_streams))
        positions = torch.zeros(prompt.batch_size, 1, dtype=torch.long, device=self.device)
        return self._run(embeds, positions, cache, output_hidden)

    @torch.no_grad()
    def decode_audio(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, T, K]`` (delay undone: :func:`~mmaccel.audio.musicgen.undelay` with :attr:`delays`) through
        EnCodec -> waveforms ``[B, C, samples]``."""
        codes = frames.transpose(1, 2)[None]  # EnCodec's [chunks, B, K, frames]
        if self.full.config.decoder.audio_channels == 2:
            left = self.full.audio_encoder.decode(codes[:, :, ::2], audio_scales=[None] * len(frames)).audio_values
            right = self.full.audio_encoder.decode(codes[:, :, 1::2], audio_scales=[None] * len(frames)).audio_values
            return torch.cat([left, right], 1)
        return self.full.audio_encoder.decode(codes, audio_scales=[None] * len(frames)).audio_values

    @property
    def sample_rate(self) -> int:
        return int(self.full.config.audio_encoder.sampling_rate)


def tiny_musicgen_text(codebooks: int = 3, vocab: int = 16, seed: int = 0) -> MusicgenForConditionalGeneration:
    """A small random ``MusicgenForConditionalGeneration`` (T5 encoder, decoder, EnCodec) for tests."""
    torch.manual_seed(seed)
    text = T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0)
    # EnCodec's quantiser count follows the bandwidth: 1000 * bw / (frame rate * 10) = codebooks.
    rate = 800 // 4
    codec = EncodecConfig(
        num_filters=4,
        hidden_size=8,
        codebook_size=vocab,
        codebook_dim=8,
        upsampling_ratios=[2, 2],
        num_lstm_layers=1,
        sampling_rate=800,
        target_bandwidths=[codebooks * rate * 10 / 1000],
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        num_codebooks=codebooks,
        max_position_embeddings=256,
        pad_token_id=vocab,
        bos_token_id=vocab,
        decoder_start_token_id=vocab,
        dropout=0.0,
    )
    config = MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)
    return MusicgenForConditionalGeneration(config).eval()
