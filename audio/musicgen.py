"""MusicGen's codec LM (``transformers.MusicgenForCausalLM``) with its delay pattern, for the stream decoder.

The delay pattern (Copet et al. 2023, "Simple and Controllable Music Generation"): at step ``s`` codebook ``k``
holds frame ``s - k``, so one forward predicts all ``K`` codebooks of a step and they are conditionally
independent given the past steps. Steps ``s < k`` of codebook ``k`` hold no frame: the layout forces them
(:meth:`MusicgenStreams.forced`) and feeds the class's pad id there, as MusicGen's own ``generate`` does.

Conditioning is a prefix (voice, phonemes, a start symbol) embedded by a small table trained jointly and fed as
``inputs_embeds``; the audio steps follow at positions ``P, P + 1, ...`` (``P`` the prefix length). MusicGen adds
sinusoidal positions counted from its cache length, which is one number for the batch; the adapter swaps in
:class:`SlotSinusoids` (the same sinusoids, non-persistent, so checkpoints are unchanged) that reads each
sample's own positions, which is what lets every sample of a batch advance at its own pace.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

from mmaccel.models.base import ModelOutput, gather_last
from mmaccel.models.cache import SlotCache
from mmaccel.models.hf import slot_forward


def delay_steps(codes: torch.Tensor, stop: int, ignore: int = -100) -> torch.Tensor:
    """Frames ``[T, K]`` -> steps ``[T + K, K]``: codebook ``k`` shifted by ``k``, ``stop`` after its last frame,
    ``ignore`` where the layout holds nothing (before the shift, after the stop)."""
    t, k = codes.shape
    out = torch.full((t + k, k), ignore, dtype=torch.long)
    for book in range(k):  # K shifts, not a loop over tokens
        out[book : book + t, book] = codes[:, book]
        out[book + t, book] = stop
    return out


def undelay(steps: torch.Tensor, frames: int, delays: list[int] | None = None) -> torch.Tensor:
    """Steps ``[S, K]`` -> the first ``frames`` frames ``[frames, K]`` (the inverse of :func:`delay_steps`);
    ``delays`` per codebook, ``0, 1, ..., K - 1`` by default (stereo MusicGen: ``0, 0, 1, 1, ...``)."""
    delays = range(steps.shape[1]) if delays is None else delays
    return torch.stack([steps[d : d + frames, book] for book, d in enumerate(delays)], 1)


def codebook_delays(config: MusicgenDecoderConfig) -> list[int]:
    """MusicGen's delay of each codebook: ``k``, or ``k // 2`` when stereo codebooks interleave left and right."""
    k = config.num_codebooks
    return [book // 2 for book in range(k)] if config.audio_channels == 2 else list(range(k))


class SlotSinusoids(nn.Module):
    """MusicGen's sinusoidal positions at per-sample ``positions`` ``[B, T]`` (set before each forward)."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = original
        self.positions: torch.Tensor | None = None

    def forward(self, input_ids: torch.Tensor, cache_length: int = 0) -> torch.Tensor:
        if self.positions is None:
            return self.original(input_ids, cache_length)
        top = int(self.positions.max()) + 1
        if top > self.original.weights.size(0):
            self.original.make_weights(top, self.original.embedding_dim)
        return self.original.weights[self.positions].detach()


@dataclass
class SpeechPrompt:
    """Right-padded prefix symbol ids ``[B, P]`` and each sample's length ``[B]``."""

    ids: torch.Tensor
    lengths: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def to(self, device) -> SpeechPrompt:
        return SpeechPrompt(self.ids.to(device), self.lengths.to(device))


class MusicgenStreams:
    """A ``MusicgenForCausalLM`` (any config, official checkpoints included) conditioned on a prefix embedding,
    driven through the stream-model contract of :class:`mmaccel.streams.StreamDecoder`.

    The vocabulary is the class's ``vocab_size``; when ``stop_token`` is given (the default speech model's
    ``vocab_size - 1``), codebook 0 emitting it ends the utterance once the delayed codebooks have caught up.
    """

    def __init__(self, model: MusicgenForCausalLM, prefix: nn.Embedding, stop_token: int | None = None):
        self.model = model.eval()
        self.prefix = prefix.eval()
        decoder = model.model.decoder
        if not isinstance(decoder.embed_positions, SlotSinusoids):
            decoder.embed_positions = SlotSinusoids(decoder.embed_positions)
        self.positions = decoder.embed_positions
        self.num_streams = model.config.num_codebooks
        self.delays = codebook_delays(model.config)
        self.vocab_size = model.config.vocab_size
        self.pad_id = model.config.vocab_size  # MusicGen's pad/bos id: the extra embedding row
        self.stop_token = stop_token
        self.stop_lag = max(self.num_streams - 2, 0)
        self.lengths: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_cache(self, batch_size: int, max_length: int) -> SlotCache:
        return SlotCache(max_length)

    def forced(self, steps: torch.Tensor) -> torch.Tensor:
        """``[B, T, K]``: the step slots the delay pattern fixes (codebook ``k`` before step ``k``, its delay)."""
        return steps[..., None] < torch.tensor(self.delays, device=steps.device)

    def _run(self, embeds: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool):
        self.positions.positions = positions
        try:
            out = slot_forward(self.model, positions, cache, inputs_embeds=embeds, output_hidden_states=output_hidden)
        finally:
            self.positions.positions = None
        b, t = positions.shape
        logits = out.logits.view(b, self.num_streams, t, -1).transpose(1, 2).float()
        return ModelOutput(logits, out.hidden_states[-1] if output_hidden else None)

    def embed_steps(self, tokens: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Summed codebook embeddings of step tokens ``[B, T, K]``, the pad id where the layout holds nothing."""
        tokens = torch.where(self.forced(steps), self.pad_id, tokens)
        tables = self.model.model.decoder.embed_tokens
        return sum(tables[k](tokens[..., k]) for k in range(self.num_streams))

    def prefill(self, prompt: SpeechPrompt, cache: SlotCache, output_hidden: bool = False) -> ModelOutput:
        ids = prompt.ids.to(self.device)
        if int(ids.min()) < 0 or int(ids.max()) >= self.prefix.num_embeddings:
            raise ValueError(f"prompt: symbol ids must lie in [0, {self.prefix.num_embeddings})")
        self.lengths = prompt.lengths.to(self.device)
        positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
        out = self._run(self.prefix(ids), positions, cache, output_hidden)
        hidden = gather_last(out.hidden, self.lengths) if output_hidden else None
        return ModelOutput(gather_last(out.logits, self.lengths), hidden)

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput:
        steps = positions - self.lengths[:, None]
        return self._run(self.embed_steps(tokens, steps), positions, cache, output_hidden)

    def reorder(self, cache: SlotCache, rows: torch.Tensor) -> None:
        cache.reorder(rows)
        self.lengths = self.lengths.index_select(0, rows.to(self.lengths.device))


def tiny_musicgen(codebooks: int = 4, vocab: int = 32, hidden: int = 32, layers: int = 2, seed: int = 0):
    """A small random ``MusicgenForCausalLM`` (tests, and the default model's architecture at other sizes)."""
    torch.manual_seed(seed)
    config = MusicgenDecoderConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        ffn_dim=hidden * 4,
        num_codebooks=codebooks,
        max_position_embeddings=512,
        pad_token_id=vocab,
        bos_token_id=vocab,
        dropout=0.0,
    )
    return MusicgenForCausalLM(config).eval()
