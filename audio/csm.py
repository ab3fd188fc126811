"""Sesame's CSM (``transformers.CsmForConditionalGeneration``) as a depth-transformer stream model.

CSM's layout (the depth-transformer layout): a Llama backbone reads the text, then one summed embedding per audio
frame (all ``K`` codebooks, ``embed_audio_tokens`` with per-codebook offsets) and predicts codebook 0 of the next
frame (``lm_head``); a small depth decoder reads ``[backbone hidden state, codebook 0]`` and predicts codebooks
``1 .. K - 1`` one at a time (``codebooks_head``, one matrix per codebook). :class:`mmaccel.depth_streams.
DepthStreamDecoder` speculates along time on the backbone and runs this depth decoder for all drafted frames of a
window at once (see there). The codec stays CSM's own Mimi (``codec_model``).

The backbone runs over a :class:`~mmaccel.models.cache.SlotCache` with per-sample positions; the depth decoder's
positions are the codebook index, the same for every row, so it uses its own ``DynamicCache`` per frame batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import CsmConfig, CsmDepthDecoderConfig, CsmForConditionalGeneration, MimiConfig
from transformers.cache_utils import DynamicCache

from mmaccel.models.base import ModelOutput, gather_last
from mmaccel.models.cache import SlotCache
from mmaccel.models.hf import slot_forward


@dataclass
class TokenIdsPrompt:
    """Right-padded text token ids ``[B, P]`` (CSM's ``[speaker]text`` prompt) and each sample's ``lengths``."""

    ids: torch.Tensor
    lengths: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def to(self, device) -> TokenIdsPrompt:
        return TokenIdsPrompt(self.ids.to(device), self.lengths.to(device))


class CsmStreams:
    """A ``CsmForConditionalGeneration`` (official checkpoints load unchanged) for the depth-layout decoder.

    ``stop``: end an utterance at CSM's end-of-audio frame (codebooks ``0 .. K - 2`` all
    ``codebook_eos_token_id``), as its ``generate`` does when the generation config has an EOS.
    """

    def __init__(self, model: CsmForConditionalGeneration, stop: bool = True):
        self.model = model.eval()
        self.num_streams = model.config.num_codebooks
        self.vocab_size = model.config.vocab_size
        self.eos = model.config.codebook_eos_token_id if stop else None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_cache(self, batch_size: int, max_length: int) -> SlotCache:
        return SlotCache(max_length)

    def _backbone(self, embeds: torch.Tensor, positions: torch.Tensor, cache: SlotCache) -> ModelOutput:
        hidden = slot_forward(self.model.backbone_model, positions, cache, inputs_embeds=embeds).last_hidden_state
        return ModelOutput(self.model.lm_head(hidden).float(), hidden)

    @torch.no_grad()
    def prefill(self, prompt: TokenIdsPrompt, cache: SlotCache) -> ModelOutput:
        ids = prompt.ids.to(self.device)
        vocab = self.model.embed_text_tokens.num_embeddings
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise ValueError(f"prompt: text token ids must lie in [0, {vocab})")
        positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
        out = self._backbone(self.model.embed_text_tokens(ids), positions, cache)
        lengths = prompt.lengths.to(self.device)
        return ModelOutput(gather_last(out.logits, lengths), gather_last(out.hidden, lengths))

    @torch.no_grad()
    def forward(self, frames: torch.Tensor, positions: torch.Tensor, cache: SlotCache) -> ModelOutput:
        return self._backbone(self.model.backbone_model.embed_tokens(frames), positions, cache)

    @torch.no_grad()
    def depth(
        self, hidden: torch.Tensor, first: torch.Tensor, pick: Callable[[torch.Tensor, int], torch.Tensor]
    ) -> torch.Tensor:
        """Frames ``[N, K]`` from backbone states ``[N, D]`` and codebook-0 tokens ``[N]``: ``K - 1`` depth
        forwards over all ``N`` rows, as CSM's ``generate`` runs its depth decoder (placeholder 0 at position 0,
        replaced by the backbone state)."""
        depth = self.model.depth_decoder
        cache = DynamicCache()
        tokens = [first]
        inputs = torch.stack([torch.zeros_like(first), first], 1)
        for book in range(1, self.num_streams):
            out = depth(
                input_ids=inputs,
                backbone_last_hidden_state=hidden if book == 1 else None,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            tokens.append(pick(out.logits[:, -1].float(), book))
            inputs = tokens[-1][:, None]
        return torch.stack(tokens, 1)

    def is_stop(self, frames: torch.Tensor) -> torch.Tensor:
        if self.eos is None:
            return torch.zeros(frames.shape[:2], dtype=torch.bool, device=frames.device)
        return (frames[..., :-1] == self.eos).all(-1)

    @torch.no_grad()
    def decode_audio(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, T, K]`` -> waveforms ``[B, 1, samples]`` through CSM's Mimi codec."""
        return self.model.codec_model.decode(frames.transpose(1, 2)).audio_values

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.codec_config.sampling_rate)


def tiny_mimi(codebooks: int, vocab: int) -> MimiConfig:
    """A small Mimi codec config (800 Hz audio, 100 frames/s) for the tiny CSM and Moshi test models."""
    return MimiConfig(
        hidden_size=16,
        num_filters=4,
        upsampling_ratios=[2, 2],
        codebook_size=vocab,
        codebook_dim=8,
        num_quantizers=codebooks,
        vector_quantization_hidden_dimension=8,
        upsample_groups=16,
        num_hidden_layers=1,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        sampling_rate=800,
        frame_rate=None,
    )


def tiny_csm(codebooks: int = 4, vocab: int = 16, seed: int = 0) -> CsmForConditionalGeneration:
    """A small random ``CsmForConditionalGeneration`` (backbone, depth decoder, Mimi) for tests; no EOS."""
    torch.manual_seed(seed)
    mimi = tiny_mimi(codebooks, vocab)
    depth = CsmDepthDecoderConfig(
        num_codebooks=codebooks,
        backbone_hidden_size=32,
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=codebooks + 1,
    )
    config = CsmConfig(
        num_codebooks=codebooks,
        vocab_size=vocab,
        text_vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=39,
        codebook_pad_token_id=vocab - 1,
        codebook_eos_token_id=0,
        bos_token_id=1,
        audio_token_id=38,
        audio_eos_token_id=37,
        depth_decoder_config=depth,
        codec_config=mimi,
    )
    return CsmForConditionalGeneration(config).eval()
