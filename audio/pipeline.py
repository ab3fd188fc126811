"""Text-to-speech in diffusers' shape: ``SpeechARPipeline.from_pretrained().to(device)(texts, method=...)``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmaccel.acceptance import rule_class, rule_parameters
from mmaccel.methods import DEFAULT_WINDOW, DRAFTER_TYPES, method, parse_method
from mmaccel.params import coerce, split_spec, typed
from mmaccel.sampling import SamplingConfig
from mmaccel.stream_heads import FrameHeads, FrameHeadsDrafter, load_frame_heads
from mmaccel.streams import FRAME_INITS, FrameJacobiDrafter, StreamDecoder, StreamStats
from mmaccel.window import AutoWindow

from .codec import SAMPLE_RATE, MelCodec, griffin_lim
from .data import phonemize
from .musicgen import undelay
from .speech_lm import SpeechLM

WEIGHTS = Path(__file__).parent / "weights"
#: Frame-repeat is the speech default: a new frame starts as a copy of the last one.
INIT_NAMES = FRAME_INITS
#: Longest phoneme string the model conditions on (its training prefixes are well under this).
MAX_PHONEMES = 160
#: A stop row far from every code vector, so that no relaxed rule counts it near a code.
_STOP_DISTANCE = 1e3
#: The speech pipeline's own method: MCTP heads (:mod:`mmaccel.stream_heads`) verified by ``rule=NAME``, any rule
#: of the core (default ``sjd``, lossless; ``mctp:rule=lantern`` relaxes it). The core's table has no heads
#: drafter for codec streams, so the pairing lives here, as mesh's ``xspec`` does. ``mctp:branch=top`` drafts each
#: head's most likely token instead of a draw.
HEADS_METHOD = "mctp"
DEFAULT_HEADS_RULE = "sjd"


def frame_drafter(name: str, params: dict[str, Any]) -> tuple[FrameJacobiDrafter | None, AutoWindow | None]:
    """The frame drafter of method ``name`` (``None`` for AR) and, for ``window=auto``, its window chooser,
    taking the drafter parameters out of ``params``; a drafter codec streams do not have is refused, naming it."""
    m = method(name)
    if m.drafter is None:
        return None, None
    if m.drafter != "jacobi":
        needs = {"draft": "a draft model", "eagle": "an EAGLE head"}.get(m.drafter, f"a {m.drafter} drafter")
        raise ValueError(f"method {name!r} needs {needs}; the speech models here have none (use sjd, gsd, ...)")
    coupling = params.pop("coupling", m.drafter_defaults.get("coupling", "none"))
    if coupling not in ("none", "maximal"):
        raise ValueError(f"method {name!r}: coupling={coupling!r} is not available for codec streams yet")
    window = params.pop("window", DEFAULT_WINDOW["jacobi"] // 2)
    auto = AutoWindow() if window == "auto" else None
    init = params.pop("init", "repeat")
    if init not in INIT_NAMES:
        raise ValueError(f"init of method {name!r} must be one of {list(INIT_NAMES)}, got {init!r}")
    return FrameJacobiDrafter(auto.max_window if auto else window, init, coupling), auto


@dataclass
class SpeechOutput:
    """Per utterance: ``waveforms`` (float32 at ``sample_rate``), codec ``tokens`` ``[T, K]``, ``acceptance_maps``
    ``[T, K]`` (the forward that committed each frame, -1 where a codebook took a resampled token rather than a
    kept draft), and the generation's ``stats``."""

    waveforms: list[np.ndarray]
    sample_rate: int
    tokens: list[torch.Tensor]
    acceptance_maps: list[torch.Tensor]
    stats: StreamStats


class SpeechARPipeline:
    """Phonemes -> codec tokens (a MusicGen-class LM, any method of the method table) -> log-mel -> audio."""

    def __init__(self, lm: SpeechLM, codec: MelCodec, lexicon: dict[str, str]):
        if lm.streams.num_streams != codec.config.codebooks or lm.streams.vocab_size != codec.config.codebook_size + 1:
            raise ValueError(
                f"LM ({lm.streams.num_streams} codebooks x {lm.streams.vocab_size - 1}) does not fit the codec "
                f"({codec.config.codebooks} x {codec.config.codebook_size})"
            )
        self.lm, self.codec, self.lexicon = lm, codec, lexicon
        self.folder: Path | None = None  # where from_pretrained read it (the bench's recogniser sits beside it)
        self.heads: FrameHeads | None = None  # MCTP heads for method ``mctp`` (the folder's heads.safetensors)

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> SpeechARPipeline:
        folder = Path(folder) if folder is not None else WEIGHTS
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder {folder} not found")
        lexicon_path = folder / "lexicon.json"
        if not lexicon_path.is_file():
            raise FileNotFoundError(f"lexicon {lexicon_path} not found")
        lexicon = json.loads(lexicon_path.read_text())
        pipe = cls(SpeechLM.from_pretrained(folder), MelCodec.from_pretrained(folder), lexicon)
        pipe.folder = folder
        pipe.heads = load_frame_heads(folder)
        return pipe

    def to(self, device: str | torch.device) -> SpeechARPipeline:
        self.lm.to(device)
        self.codec.to(device)
        if self.heads is not None:
            self.heads.to(device)
        return self

    @property
    def voices(self) -> list[str]:
        return self.lm.voices

    def tables(self) -> torch.Tensor:
        """``[K, V, D]`` nearby-token tables for LANTERN/GSD: each codebook's code vectors, the stop row far away."""
        codes = self.codec.code_vectors()
        stop = torch.full((codes.shape[0], 1, codes.shape[2]), _STOP_DISTANCE, device=codes.device)
        return torch.cat([codes, stop], 1)

    def decoder(self, spec: str = "ar", sampling: SamplingConfig | None = None) -> StreamDecoder:
        """The stream decoder of method ``spec`` (``name[:param=value...]``, e.g. ``sjd:window=8:init=repeat``, or
        ``mctp:rule=lantern`` for the MCTP heads)."""
        name, raw = split_spec(spec, "method")
        if name == HEADS_METHOD:
            return self._heads_decoder(name, raw, sampling)
        name, params = parse_method(spec, "method")
        m = method(name)
        drafter, auto = frame_drafter(name, params)
        return StreamDecoder(self.lm.streams, drafter, m.rule, sampling, tables=self.tables(), auto=auto, **params)

    def _heads_decoder(self, name: str, raw: dict[str, str], sampling: SamplingConfig | None) -> StreamDecoder:
        if self.heads is None:
            raise ValueError(
                f"method {name!r} needs MCTP heads (heads.safetensors in the model folder); this model has none "
                "(distil them: python -m mmaccel.audio.training.train_heads)"
            )
        params = dict(raw)
        rule = params.pop("rule", DEFAULT_HEADS_RULE)
        rule_class(rule)  # an unknown rule names the known ones
        where = f"method {name!r}"
        branch = coerce(params.pop("branch", "sample"), DRAFTER_TYPES["branch"], "branch", where)
        tail = coerce(params.pop("tail", 0), int, "tail", where)
        tail_from = params.pop("tail_from", "head")
        params = typed(params, rule_parameters(rule), f"method {name!r} with rule {rule!r}")
        try:
            drafter = FrameHeadsDrafter(self.heads, branch=branch, tail=tail, tail_from=tail_from)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        return StreamDecoder(self.lm.streams, drafter, rule, sampling, tables=self.tables(), **params)

    def prompts(self, texts: list[str], voice: str):
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError("text: no text given")
        prefixes = []
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError("text: empty text")
            phonemes = phonemize(text, self.lexicon)
            if len(phonemes) > MAX_PHONEMES:
                raise ValueError(f"text: {len(phonemes)} phonemes is beyond the model's maximum of {MAX_PHONEMES}")
            prefixes.append(self.lm.encode_prefix(phonemes, voice))
        return self.lm.prompt(prefixes).to(self.lm.musicgen.device)

    @torch.no_grad()
    def __call__(
        self,
        texts: str | list[str],
        voice: str = "m1",
        method: str = "ar",
        seeds: list[int] | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        max_steps: int | None = None,
        progress: bool = False,
        decoder: StreamDecoder | None = None,
    ) -> SpeechOutput:
        prompt = self.prompts(texts, voice)
        limit = self.lm.max_steps
        max_steps = limit if max_steps is None else max_steps
        if not isinstance(max_steps, int) or not 1 <= max_steps <= limit:
            raise ValueError(f"max_steps must be an integer in [1, {limit}] (the model's maximum), got {max_steps!r}")
        decoder = decoder or self.decoder(method, SamplingConfig(temperature=temperature, top_k=top_k))
        out = decoder.generate(prompt, max_steps, seeds=seeds, progress=progress)
        return self.decode(out.tokens, out.stats)

    def decode(self, steps: torch.Tensor, stats: StreamStats) -> SpeechOutput:
        """Step tokens ``[B, N, K]`` -> frames (delay undone, cut at the stop) -> waveforms."""
        k = self.lm.streams.num_streams
        tokens, maps, waves = [], [], []
        for b, n in enumerate(stats.lengths.tolist()):
            frames = max(n - k + 1 if n > k else 1, 1)  # a stopped sample ends K - 1 steps after its last frame
            stop = (steps[b, :n, 0] == self.lm.streams.stop_token).nonzero()
            if len(stop):
                frames = min(frames, int(stop[0]))
            frames = max(frames, 1)
            codes, amap = frames_and_map(steps, stats, b, frames)
            codes = codes.clamp(max=self.codec.config.codebook_size - 1)
            tokens.append(codes.cpu())
            maps.append(amap.cpu())
            mel = self.codec.decode(codes[None])
            waves.append(griffin_lim(mel, seed=b)[0].cpu().numpy().astype(np.float32))
        return SpeechOutput(waves, SAMPLE_RATE, tokens, maps, stats)


def frames_and_map(
    steps: torch.Tensor, stats: StreamStats, row: int, frames: int, delays: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``row``'s first ``frames`` frames ``[T, K]`` (delays undone) and its acceptance map ``[T, K]``: the
    forward that committed each token, -1 where a codebook took a resampled token rather than a kept draft."""
    k = steps.shape[2]
    codes = undelay(steps[row], frames, delays)
    step_of = undelay(stats.accept_step[row, :, None].expand(-1, k), frames, delays)
    drafted = undelay(stats.from_draft[row].long(), frames, delays).bool()
    return codes, torch.where(drafted | (step_of == 0), step_of, -1)


def describe(output: SpeechOutput) -> dict[str, Any]:
    """Stats JSON of one generation."""
    return {**output.stats.as_dict(), "frames": [len(t) for t in output.tokens], "sample_rate": output.sample_rate}
