"""Kyutai's Moshi (``transformers.MoshiForConditionalGeneration``) as a depth-transformer stream model.

Moshi's layout: at each step (12.5 Hz with the real Mimi) a backbone (``decoder``, a Moshi LM) reads ONE summed
embedding: its inner-monologue text token, its own ``K`` audio codebooks and the user's ``K`` audio codebooks
(``embed_tokens``, ``2 K`` tables), and predicts the next text token (``decoder.lm_head``); a small depth decoder
(``depth_decoder``, per-codebook weights) reads ``[text token, codebooks 0 .. K - 2]`` with the backbone's state
and predicts Moshi's ``K`` audio codebooks of that step, one after another. Moshi's codebooks ``1 .. K - 1`` are
delayed one step behind codebook 0 (its ``build_delay_pattern_mask``).

Here a step's frame is ``K + 1`` streams: the text token (stream 0, from the backbone) and Moshi's ``K`` audio
codebooks (streams ``1 .. K``, from the depth decoder), so :class:`~mmaccel.depth_streams.DepthStreamDecoder`
speculates along time on the backbone exactly as for CSM: one backbone forward verifies a window of drafted
frames, the depth decoder runs for every window position at once, frames are verified by sample-and-match.

What the class's ``generate`` does and this adapter reproduces (token-identical under greedy, tested):
- the unconditional first step (text ``vocab_size``, all audio ``audio_vocab_size``) before the prompt;
- the delay pattern on the prompt's codes, whose last delayed codes pin codebooks ``1 .. K - 1`` of the first
  generated step (:meth:`MoshiStreams.pins`);
- the user stream during generation: Mimi's codes of one silent frame at every step (Moshi listens to silence).

Left out: a user stream that keeps arriving while Moshi speaks (full duplex: the user's codes at generated steps
are silence here, as in ``generate``); the final step's pad in codebook 0 that ``generate`` writes at
``max_length - 1`` (an artefact of its fixed length; this decoder has none); separate sampling settings for the
text and the audio (one :class:`~mmaccel.sampling.SamplingConfig` serves both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import MoshiConfig, MoshiForConditionalGeneration
from transformers.cache_utils import DynamicCache

from mmaccel.models.base import ModelOutput, gather_last
from mmaccel.models.cache import SlotCache
from mmaccel.models.hf import slot_forward

from .csm import tiny_mimi


def moshi_delays(codebooks: int) -> list[int]:
    """Per stream of a Moshi frame (text, codebook 0, ..., codebook K - 1): 0, 0, 1, ..., 1."""
    return [0, 0] + [1] * (codebooks - 1)


@dataclass
class MoshiPrompt:
    """Right-padded prompt steps in the class's own layout: text ``input_ids`` ``[B, T]``, Moshi's and the user's
    audio codes ``[B, K, T]`` (undelayed, as ``generate`` takes them), and each sample's ``steps``."""

    input_ids: torch.Tensor
    moshi_audio_codes: torch.Tensor
    user_audio_codes: torch.Tensor
    steps: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        """Backbone positions each prompt fills: its steps after the class's unconditional first step."""
        return self.steps + 1

    def to(self, device) -> MoshiPrompt:
        return MoshiPrompt(
            self.input_ids.to(device),
            self.moshi_audio_codes.to(device),
            self.user_audio_codes.to(device),
            self.steps.to(device),
        )


class MoshiCache(SlotCache):
    """The backbone's :class:`SlotCache` plus what one generation's prompt fixes: where each sample's generated
    steps ``start``, the pinned codebooks of its first step and the user's codes there."""

    start: torch.Tensor
    first_pins: torch.Tensor  # [B, K]: Moshi's delayed codes of the prompt's last step (codebook 0 unused)
    first_user: torch.Tensor  # [B, K]: the user's codes at the first generated step


class MoshiStreams:
    """A ``MoshiForConditionalGeneration`` (official checkpoints load unchanged) for the depth-layout decoder.

    ``num_streams`` is ``K + 1`` (the text token, then Moshi's ``K`` codebooks); ``vocab_size`` covers both the
    text vocabulary and the audio codes with their special id (``audio_vocab_size``, Moshi's BOS/pad)."""

    def __init__(self, model: MoshiForConditionalGeneration):
        self.model = model.eval()
        self.codebooks = model.config.num_codebooks
        self.text_vocab = model.config.vocab_size
        self.audio_vocab = model.config.audio_vocab_size
        self.num_streams = self.codebooks + 1
        self.vocab_size = max(self.text_vocab, self.audio_vocab + 1)
        self.blank = self._blank_codes()

    @torch.no_grad()
    def _blank_codes(self) -> torch.Tensor:
        """Mimi's ``K`` codes of one frame of silence: the user stream while Moshi speaks, as in ``generate``."""
        config = self.model.config
        samples = int(config.sampling_rate / config.audio_encoder_config.frame_rate)
        silence = torch.zeros(1, 1, samples, dtype=self.model.dtype, device=self.device)
        return self.model.audio_encoder.encode(silence, num_quantizers=self.codebooks)[0][0, :, 0]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_cache(self, batch_size: int, max_length: int) -> MoshiCache:
        return MoshiCache(max_length)

    def _backbone(
        self, text: torch.Tensor, moshi: torch.Tensor, user: torch.Tensor, positions: torch.Tensor, cache: SlotCache
    ) -> ModelOutput:
        """Text ``[B, T]`` and audio codes ``[B, T, K]`` -> text logits and the backbone's (normed) states, with
        the class's embedding sum in its own order (audio tables first, then the text embedding)."""
        codes = torch.cat([moshi, user], 2)
        audio = sum(self.model.embed_tokens[book](codes[..., book]) for book in range(codes.shape[2]))
        embeds = audio + self.model.decoder.model.embed_tokens(text)
        hidden = slot_forward(self.model.decoder.model, positions, cache, inputs_embeds=embeds).last_hidden_state
        return ModelOutput(self.model.decoder.lm_head(hidden).float(), hidden)

    def _check_prompt(self, prompt: MoshiPrompt) -> None:
        b, t = prompt.input_ids.shape
        for name in ("moshi_audio_codes", "user_audio_codes"):
            codes = getattr(prompt, name)
            if codes.shape != (b, self.codebooks, t):
                raise ValueError(f"prompt: {name} must be [{b}, {self.codebooks}, {t}], got {list(codes.shape)}")
            if int(codes.min()) < 0 or int(codes.max()) > self.audio_vocab:
                raise ValueError(f"prompt: {name} must lie in [0, {self.audio_vocab}]")
        if int(prompt.input_ids.min()) < 0 or int(prompt.input_ids.max()) > self.text_vocab:
            raise ValueError(f"prompt: input_ids must lie in [0, {self.text_vocab}]")
        if int(prompt.steps.min()) < 1 or int(prompt.steps.max()) > t:
            raise ValueError(f"prompt: steps must lie in [1, {t}]")

    def _delayed(self, codes: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt codes ``[B, K, T]`` after the unconditional step -> the delayed steps ``[B, T + 1, K]`` the
        backbone reads, and each row's last delayed codes ``[B, K]`` (they land on the first generated step)."""
        b, k, _ = codes.shape
        initial = torch.full((b, k, 1), self.audio_vocab, dtype=codes.dtype, device=codes.device)
        frames = torch.cat([initial, codes], 2).transpose(1, 2)  # [B, T + 1, K]
        delayed = frames.clone()
        delayed[:, 1:, 1:] = frames[:, :-1, 1:]
        delayed[:, 0, 1:] = self.audio_vocab  # BOS
        last = frames.gather(1, steps.view(-1, 1, 1).expand(-1, 1, k)).squeeze(1)  # row ``steps``: the last real
        return delayed, last

    @torch.no_grad()
    def prefill(self, prompt: MoshiPrompt, cache: MoshiCache) -> ModelOutput:
        prompt = prompt.to(self.device)
        self._check_prompt(prompt)
        b = prompt.batch_size
        initial = torch.full((b, 1), self.text_vocab, dtype=torch.long, device=self.device)
        text = torch.cat([initial, prompt.input_ids], 1)
        lengths = prompt.lengths
        moshi, cache.first_pins = self._delayed(prompt.moshi_audio_codes, prompt.steps)
        user, last_user = self._delayed(prompt.user_audio_codes, prompt.steps)
        cache.first_user = torch.cat([self.blank[None, :1].expand(b, 1), last_user[:, 1:]], 1)
        cache.start = lengths
        positions = torch.arange(text.shape[1], device=self.device).expand_as(text)
        out = self._backbone(text, moshi, user, positions, cache)
        return ModelOutput(gather_last(out.logits, lengths), gather_last(out.hidden, lengths))

    @torch.no_grad()
    def forward(self, frames: torch.Tensor, positions: torch.Tensor, cache: MoshiCache) -> ModelOutput:
        # Drafts may hold ids past a stream's table (random inits draw over ``vocab_size``); they are clamped for
        # the embedding only: such a draft never equals the model's frame, so nothing read after it is committed.
        text = frames[..., 0].clamp(0, self.text_vocab)
        moshi = frames[..., 1:].clamp(0, self.audio_vocab)
        first = (positions == cache.start[:, None])[..., None]
        user = torch.where(first, cache.first_user[:, None], self.blank.expand_as(moshi))
        return self._backbone(text, moshi, user, positions, cache)

    @torch.no_grad()
    def depth(
        self, hidden: torch.Tensor, first: torch.Tensor, pick: Callable[[torch.Tensor, int], torch.Tensor]
    ) -> torch.Tensor:
        """Frames ``[N, K + 1]`` from backbone states ``[N, D]`` and text tokens ``[N]``: ``K`` depth forwards
        over all ``N`` rows, as the class's ``generate`` runs its depth decoder (text token at depth position 0,
        then each drawn codebook; the backbone state enters every position through its own projection)."""
        depth = self.model.depth_decoder
        cache = DynamicCache(config=depth.config)
        state = hidden[:, None]
        tokens, inputs = [first], first[:, None]
        for book in range(self.codebooks):
            out = depth(input_ids=inputs, last_hidden_state=state, cache=cache, use_cache=True)
            tokens.append(pick(out.logits[:, -1].float(), book + 1))
            inputs = tokens[-1][:, None]
        return torch.stack(tokens, 1)

    def pins(self, steps: torch.Tensor, cache: MoshiCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots ``[B, T, K + 1]`` the prompt fixes at generated ``steps`` ``[B, T]``: Moshi's codebooks
        ``1 .. K - 1`` of step 0 hold the prompt's last delayed codes (the class's delay pattern mask)."""
        b, t = steps.shape
        mask = torch.zeros(b, t, self.num_streams, dtype=torch.bool, device=steps.device)
        mask[..., 2:] = (steps == 0)[..., None]
        tokens = torch.zeros(b, t, self.num_streams, dtype=torch.long, device=steps.device)
        tokens[..., 1:] = cache.first_pins[:, None]
        return mask, tokens

    def is_stop(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.zeros(frames.shape[:2], dtype=torch.bool, device=frames.device)  # Moshi never stops itself

    @torch.no_grad()
    def decode_audio(self, frames: torch.Tensor) -> torch.Tensor:
        """Undelayed frames ``[B, T, K + 1]`` (text first) -> waveforms ``[B, 1, samples]`` through Moshi's Mimi;
        special ids (BOS/pad) are clamped into the codebook."""
        codes = frames[..., 1:].clamp(max=self.audio_vocab - 1)
        return self.model.audio_encoder.decode(codes.transpose(1, 2)).audio_values

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)


def tiny_moshi(
    codebooks: int = 3, vocab: int = 16, text_vocab: int = 40, seed: int = 0
) -> MoshiForConditionalGeneration:
    """A small random ``MoshiForConditionalGeneration`` (backbone, depth decoder, Mimi) for tests."""
    torch.manual_seed(seed)
    mimi = tiny_mimi(codebooks, vocab)
    config = MoshiConfig(
        vocab_size=text_vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        ffn_dim=64,
        num_codebooks=codebooks,
        max_position_embeddings=256,
        sliding_window=256,
        audio_encoder_config=mimi.to_dict(),
        depth_decoder_config={
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "ffn_dim": 32,
            "max_position_embeddings": codebooks + 1,
            "sliding_window": codebooks + 1,
        },
    )
    return MoshiForConditionalGeneration(config).eval()


__all__ = ["MoshiCache", "MoshiPrompt", "MoshiStreams", "moshi_delays", "tiny_moshi"]
