"""Real speech families from a local checkpoint folder, for ``mmaccel generate speech --family NAME --model DIR``.

A folder is what ``save_pretrained`` writes (``config.json``, safetensors weights, the tokenizer files); official
checkpoints load unchanged. Each family keeps its own codec: MusicGen's EnCodec and CSM's and Moshi's Mimi are
inside the checkpoint; Dia's DAC is a separate model (``descript/dac_44khz``), read from the folder's ``dac/``
subfolder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    CsmForConditionalGeneration,
    DacModel,
    DiaForConditionalGeneration,
    MoshiForConditionalGeneration,
    MusicgenForConditionalGeneration,
)

from mmaccel.depth_streams import DepthStreamDecoder
from mmaccel.methods import method, parse_method
from mmaccel.sampling import SamplingConfig
from mmaccel.streams import StreamDecoder, StreamStats

from .csm import CsmStreams, TokenIdsPrompt
from .dia import DiaStreams
from .moshi import MoshiPrompt, MoshiStreams, moshi_delays
from .musicgen_text import MusicgenTextStreams, TextPrompt
from .pipeline import SpeechOutput, frame_drafter, frames_and_map

#: ``--family`` name -> the transformers class whose checkpoints it loads (its ``model_type`` is the name).
FAMILIES: dict[str, type] = {
    "musicgen": MusicgenForConditionalGeneration,
    "csm": CsmForConditionalGeneration,
    "dia": DiaForConditionalGeneration,
    "moshi": MoshiForConditionalGeneration,
}
#: Families of the depth-transformer layout (a backbone and a depth decoder): frames verified by sample-and-match.
DEPTH_FAMILIES = ("csm", "moshi")
#: Where the special ids' rows sit in a nearby-token table: far from every code vector and from each other.
FAR = 1e3
#: Steps generated when ``--max-steps`` is not given (the families' own defaults are tens of seconds of audio).
DEFAULT_STEPS = 256


def check_folder(family: str, folder: str | Path) -> Path:
    """The folder, refused with an error naming it when it is missing or holds another architecture."""
    if family not in FAMILIES:
        raise ValueError(f"--family: unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--model: {folder} has no config.json (a save_pretrained folder of {family})")
    model_type = AutoConfig.from_pretrained(folder).model_type
    if model_type != family:
        raise ValueError(f"--model: {folder} holds a {model_type!r} checkpoint, not {family!r}")
    return folder


class FamilySpeech:
    """A real family's checkpoint as a text-to-speech pipeline: text -> codec tokens (any lossless method of the
    method table) -> the family's own codec -> audio, with the same :class:`SpeechOutput` as the default model."""

    def __init__(self, family: str, model: Any, tokenizer: Any, codec: DacModel | None = None):
        self.family, self.tokenizer, self.codec = family, tokenizer, codec
        if family == "musicgen":
            self.streams = MusicgenTextStreams(model)
        elif family == "dia":
            self.streams = DiaStreams(model)
        elif family == "moshi":
            self.streams = MoshiStreams(model)
        else:
            self.streams = CsmStreams(model)

    @classmethod
    def from_pretrained(cls, family: str, folder: str | Path) -> FamilySpeech:
        folder = check_folder(family, folder)
        model = FAMILIES[family].from_pretrained(folder, use_safetensors=True).eval()
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"--model: no usable tokenizer in {folder} ({err})") from None
        codec = None
        if family == "dia":
            dac = folder / "dac"
            if not (dac / "config.json").is_file():
                raise FileNotFoundError(f"--model: Dia's DAC codec is not at {dac} (a DacModel folder)")
            codec = DacModel.from_pretrained(dac, use_safetensors=True).eval()
        return cls(family, model, tokenizer, codec)

    @property
    def delays(self) -> list[int]:
        if self.family == "moshi":
            return moshi_delays(self.streams.codebooks)
        return [0] * self.streams.num_streams if self.family == "csm" else list(self.streams.delays)

    def decoder(self, spec: str = "ar", sampling: SamplingConfig | None = None):
        """The stream decoder of method ``spec``; the depth layout (CSM, Moshi) takes lossless rules only."""
        name, params = parse_method(spec, "method")
        rule = method(name).rule
        drafter, auto = frame_drafter(name, params)
        if self.family in DEPTH_FAMILIES:
            label = {"csm": "CSM", "moshi": "Moshi"}[self.family]
            if auto is not None:
                raise ValueError(f"method {name!r}: window='auto' is not available for {label}'s depth layout yet")
            if drafter is not None and drafter.coupling != "none":
                raise ValueError(f"method {name!r}: {label} verifies whole frames, so redraft couplings do not apply")
            if params:
                raise ValueError(f"method {name!r}: parameters {sorted(params)} do not apply to {label}'s frames")
            return DepthStreamDecoder(self.streams, drafter, rule, sampling)
        return StreamDecoder(self.streams, drafter, rule, sampling, tables=self.tables(), auto=auto, **params)

    @torch.no_grad()
    def tables(self) -> torch.Tensor | None:
        """``[K, V, D]`` nearby-token tables for LANTERN and GSD: each codebook's code vectors in the family's own
        codec (EnCodec's, DAC's), the special ids past the codes (Dia's EOS, pad, BOS) placed far from them."""
        if self.family == "musicgen":
            layers = self.streams.full.audio_encoder.quantizer.layers
            codes = [layers[d].codebook.embed for d in self.streams.delays]  # stereo pairs share a quantiser
        elif self.family == "dia" and self.codec is not None:
            codes = [q.codebook.weight for q in self.codec.quantizer.quantizers[: self.streams.num_streams]]
        else:
            return None
        table = torch.stack(codes).float()
        extra = self.streams.vocab_size - table.shape[1]
        if extra > 0:
            far = torch.full((table.shape[0], extra, table.shape[2]), FAR, device=table.device)
            table = torch.cat([table, far + torch.arange(extra, device=table.device)[None, :, None]], 1)
        return table

    def prompts(self, texts: list[str], voice: str | None):
        if isinstance(texts, str):
            texts = [texts]
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError("text: empty text")
        if self.family == "csm":
            speaker = "0" if voice is None else voice
            if not speaker.isdigit():
                raise ValueError(f"--voice: CSM takes a speaker number (0, 1, ...), got {voice!r}")
            rows = [self.tokenizer(f"[{speaker}]{t}").input_ids for t in texts]
            ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
            for i, row in enumerate(rows):
                ids[i, : len(row)] = torch.tensor(row)
            return TokenIdsPrompt(ids, torch.tensor([len(r) for r in rows]))
        if self.family == "moshi":
            return self._moshi_prompt(texts, voice)
        if voice is not None:
            raise ValueError(f"--voice: {self.family} has no voices (describe the voice in the text)")
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        return TextPrompt(enc.input_ids, enc.attention_mask)

    @torch.no_grad()
    def __call__(
        self,
        texts: str | list[str],
        voice: str | None = None,
        method: str = "ar",
        seeds: list[int] | None = None,
        temperature: float = 1.0,
        max_steps: int | None = None,
        progress: bool = False,
    ) -> SpeechOutput:
        prompt = self.prompts(texts, voice).to(self.streams.device)
        decoder = self.decoder(method, SamplingConfig(temperature=temperature))
        max_steps = DEFAULT_STEPS if max_steps is None else max_steps
        out = decoder.generate(prompt, max_steps, seeds=seeds, progress=progress)
        return self.decode(out.tokens, out.stats)

    def _moshi_prompt(self, texts: list[str], voice: str | None) -> MoshiPrompt:
        """The text on Moshi's text stream, one token a step, with both audio streams at Moshi's initial id
        (``audio_vocab_size``, as in its unconditional inputs): a text prompt with no audio, as ``generate`` takes
        one. An audio prompt (the user's speech) is a :class:`MoshiPrompt` built from Mimi codes, API only."""
        if voice is not None:
            raise ValueError("--voice: moshi has no voices (its voice is the checkpoint's: moshiko, moshika)")
        rows = [self.tokenizer(t).input_ids for t in texts]
        width, k = max(map(len, rows)), self.streams.codebooks
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        silent = torch.full((len(rows), k, width), self.streams.audio_vocab, dtype=torch.long)
        return MoshiPrompt(ids, silent, silent.clone(), torch.tensor([len(r) for r in rows]))

    def frames_of(self, steps: torch.Tensor, n: int) -> int:
        """How many whole frames ``n`` generated steps hold (cut at the family's end of speech)."""
        eos = getattr(self.streams, "eos", None)
        if self.family == "csm":
            stop = self.streams.is_stop(steps[None, :n])[0].nonzero()
            return int(stop[0]) if len(stop) else n
        frames = n - max(self.delays)
        if eos is not None:
            stop = (steps[:n, 0] == eos).nonzero()
            frames = min(frames, int(stop[0])) if len(stop) else frames
        return max(frames, 0)

    def decode(self, steps: torch.Tensor, stats: StreamStats) -> SpeechOutput:
        tokens, maps, waves = [], [], []
        for b, n in enumerate(stats.lengths.tolist()):
            frames = max(self.frames_of(steps[b], n), 1)
            codes, amap = frames_and_map(steps, stats, b, frames, self.delays)
            tokens.append(codes.cpu())
            maps.append(amap.cpu())
            waves.append(self._audio(codes)[0].mean(0).cpu().numpy().astype(np.float32))
        return SpeechOutput(waves, self.sample_rate, tokens, maps, stats)

    def _audio(self, codes: torch.Tensor) -> torch.Tensor:
        """Frames ``[T, K]`` -> ``[1, channels, samples]`` through the family's codec."""
        if self.family in ("musicgen", "csm", "moshi"):
            return self.streams.decode_audio(codes[None])
        vocab = self.codec.config.codebook_size
        return self.codec.decode(audio_codes=codes.clamp(max=vocab - 1).T[None]).audio_values[:, None]

    @property
    def sample_rate(self) -> int:
        if self.codec is not None:
            return int(self.codec.config.sampling_rate)
        return self.streams.sample_rate
