"""Nari Labs' Dia (``transformers.DiaForConditionalGeneration``: a byte-level text encoder, a decoder over 9 DAC
codebooks with its own delay pattern ``[0, 8, 9, ..., 15]``) through the stream decoder.

What ``generate`` does, reproduced per step so that any verified rule sees the distribution it samples from:
- the delay pattern: codebook ``k`` is BOS before step ``delay_k`` (the processor's TTS-mode decoder input);
- guidance (``DiaClassifierFreeGuidanceLogitsProcessor``): the unconditional half reads an all-zero text with
  the same mask; ``logits = c + s * (c - u)``, and with ``guidance_top_k`` the conditional logits restricted to the
  guided top-k;
- the EOS channel filter (``DiaEOSChannelFilterLogitsProcessor``): only codebook 0 may emit EOS, no codebook
  emits the special ids above it, and EOS is forced when it is codebook 0's top logit, suppressed otherwise. All of
  this is a function of one position's logits, so it is applied to every window position alike;
- the EOS delay (``DiaEOSDelayPatternLogitsProcessor``): ``delay_k`` steps after codebook 0's first EOS,
  codebook ``k`` is forced to EOS, and a codebook that has emitted its EOS is pad from then on (``generate`` pads
  finished rows, and feeds the pads back). That depends on earlier tokens, drafts included:
  :meth:`DiaStreams.pinned`.
The utterance ends ``max(delay) - 1`` steps after codebook 0's EOS, when every codebook's last frame is in.
``generate``'s forced EOS at its maximum length is not reproduced (the stream decoder stops at ``max_steps``).
"""

from __future__ import annotations

import torch
from transformers import DiaConfig, DiaDecoderConfig, DiaEncoderConfig, DiaForConditionalGeneration

from mmaccel.models.base import ModelOutput
from mmaccel.models.hf import slot_forward

from .musicgen_text import CrossAttentionSlotCache, TextPrompt


class DiaStreams:
    """A ``DiaForConditionalGeneration`` (official checkpoints load unchanged) as a stream model.

    ``guidance_scale`` and ``guidance_top_k`` as ``generate`` takes them (``None``: the checkpoint's generation
    config; a scale ``<= 1``: no guidance)."""

    def __init__(
        self,
        model: DiaForConditionalGeneration,
        guidance_scale: float | None = None,
        guidance_top_k: int | None = None,
    ):
        self.model = model.eval()
        config = model.config.decoder_config
        if guidance_scale is None:
            guidance_scale = getattr(model.generation_config, "guidance_scale", None) or 1.0
        if guidance_top_k is None:
            guidance_top_k = getattr(model.generation_config, "top_k", None)
        self.guidance_scale, self.guidance_top_k = float(guidance_scale), guidance_top_k
        self.num_streams = config.num_channels
        self.vocab_size = config.vocab_size
        self.delays = list(model.config.delay_pattern)
        self.bos, self.eos = config.bos_token_id, config.eos_token_id
        self.stop_token = self.eos
        self.stop_lag = max(max(self.delays) - 1, 0)
        self.encoder_states: torch.Tensor | None = None
        self.encoder_mask: torch.Tensor | None = None
        self.lengths: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1

    def new_cache(self, batch_size: int, max_length: int) -> CrossAttentionSlotCache:
        return CrossAttentionSlotCache(max_length)

    def forced(self, steps: torch.Tensor) -> torch.Tensor:
        """``[B, T, K]``: codebook ``k`` before step ``delay_k`` (BOS in the input, token 0 in ``p``)."""
        return steps[..., None] < torch.tensor(self.delays, device=steps.device)

    def pinned(self, steps: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """After the first EOS of codebook 0 at step ``s`` among the ``known`` steps: EOS in codebook ``k`` at step
        ``s + delay_k`` (``k >= 1``), pad after it, as ``generate`` pads every finished codebook row. A pin reads
        strictly earlier steps only, never the draft at its own step."""
        slots = known.shape[1]
        index = torch.arange(slots, device=known.device)
        first = torch.where(known[..., 0] == self.eos, index, slots).min(1).values  # [B], slots when none
        ends = first[:, None, None] + torch.tensor(self.delays, device=steps.device)  # [B, 1, K]
        ended = (first < slots)[:, None, None]
        eos = ended & (steps[..., None] == ends) & (ends > first[:, None, None])
        pad = ended & (steps[..., None] > ends)
        tokens = torch.where(eos, self.eos, self.model.config.decoder_config.pad_token_id)
        return eos | pad, tokens

    def _filter(self, logits: torch.Tensor) -> torch.Tensor:
        """Dia's EOS channel filter on ``[..., K, V]`` logits."""
        eos = self.eos
        logits = logits.clone()
        logits[..., 1:, eos:] = float("-inf")
        logits[..., 0, eos + 1 :] = float("-inf")
        top_is_eos = logits.argmax(-1, keepdim=True) == eos
        vocab = torch.arange(logits.shape[-1], device=logits.device)
        logits = logits.masked_fill(top_is_eos & (vocab < eos), float("-inf"))
        return logits.masked_fill(~top_is_eos & (vocab == eos), float("-inf"))

    def _run(self, tokens: torch.Tensor, positions: torch.Tensor, cache) -> ModelOutput:
        if self.guided:
            tokens, positions = torch.cat([tokens, tokens]), torch.cat([positions, positions])
        out = slot_forward(
            self.model.model.decoder,
            positions,
            cache,
            input_ids=tokens,
            encoder_hidden_states=self.encoder_states,
            encoder_attention_mask=self.encoder_mask,
        )
        rows, t = positions.shape
        logits = self.model.logits_dense(out.last_hidden_state).view(rows, t, self.num_streams, -1).float()
        if self.guided:
            cond, uncond = logits.chunk(2)
            logits = cond + (cond - uncond) * self.guidance_scale
            if self.guidance_top_k is not None:
                top = logits.topk(self.guidance_top_k, dim=-1).indices
                keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, top, True)
                logits = cond.masked_fill(~keep, float("-inf"))
        return ModelOutput(self._filter(logits))

    @torch.no_grad()
    def prefill(self, prompt: TextPrompt, cache, output_hidden: bool = False) -> ModelOutput:
        ids, mask = prompt.ids.to(self.device), prompt.mask.to(self.device)
        vocab = self.model.config.encoder_config.vocab_size
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise ValueError(f"prompt: text byte ids must lie in [0, {vocab})")
        if self.guided:  # generate's null condition: zero ids under the same mask
            ids, mask = torch.cat([ids, torch.zeros_like(ids)]), torch.cat([mask, mask])
        self.encoder_states = self.model.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        self.encoder_mask = mask
        self.lengths = prompt.lengths.to(self.device)
        bos = torch.full((prompt.batch_size, 1, self.num_streams), self.bos, dtype=torch.long, device=self.device)
        positions = torch.zeros(prompt.batch_size, 1, dtype=torch.long, device=self.device)
        return self._run(bos, positions, cache)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, cache, output_hidden: bool = False):
        steps = positions - self.lengths[:, None]
        return self._run(torch.where(self.forced(steps), self.bos, tokens), positions, cache)

    def decoder_inputs(self, batch_size: int) -> torch.Tensor:
        """The TTS-mode delayed decoder input ``DiaProcessor`` builds (``[B, 1 + max delay, K]``: BOS up to each
        codebook's delay, pad after), which the class's own ``generate`` needs to apply the delay pattern."""
        t = torch.arange(1 + max(self.delays))[:, None]
        pattern = torch.where(t <= torch.tensor(self.delays), self.bos, self.model.config.decoder_config.pad_token_id)
        return pattern.expand(batch_size, -1, -1).clone()


def tiny_dia(channels: int = 4, vocab: int = 20, delays: list[int] | None = None, seed: int = 0):
    """A small random ``DiaForConditionalGeneration`` for tests: codebook ids ``0 .. vocab - 5``, then EOS, pad,
    BOS as in Dia's layout (1024, 1025, 1026 of 1028)."""
    torch.manual_seed(seed)
    delays = delays or [0, 2, 3, 4][:channels]
    encoder = DiaEncoderConfig(
        vocab_size=256,  # bytes, as DiaTokenizer writes them
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
    )
    decoder = DiaDecoderConfig(
        vocab_size=vocab,
        num_channels=channels,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        cross_num_attention_heads=2,
        cross_num_key_value_heads=2,
        cross_head_dim=8,
        cross_hidden_size=16,
        max_position_embeddings=256,
        eos_token_id=vocab - 4,
        pad_token_id=vocab - 3,
        bos_token_id=vocab - 2,
    )
    config = DiaConfig(encoder_config=encoder, decoder_config=decoder, delay_pattern=delays)
    return DiaForConditionalGeneration(config).eval()
