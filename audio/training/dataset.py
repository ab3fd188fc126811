"""Cached espeak-ng speech sets: log-mel frames, texts, voices and phonemes, one file per (seed, size)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmaccel.audio.codec import log_mel
from mmaccel.audio.data import build_lexicon, make_utterances, phonemize, require_espeak

# Seeds of the speech sets: codec and LM training, validation, the recogniser's held-out speech, the bench.
TRAIN_SEED, VAL_SEED, RECOGNISER_SEED, BENCH_SEED = 1, 2, 3, 4


@dataclass
class SpeechSet:
    mels: list[torch.Tensor]  # each [T, 80]
    texts: list[str]
    voices: list[str]
    phonemes: list[str]


def speech_set(n: int, seed: int, cache: Path) -> SpeechSet:
    """``n`` espeak-ng utterances of ``seed`` as log-mel frames, cached under ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = cache / f"speech_{seed}_{n}"
    if not stem.with_suffix(".json").is_file():
        require_espeak()
        lexicon = lexicon_cached(cache)
        utts = make_utterances(n, seed)
        mels = [log_mel(torch.from_numpy(u.waveform)[None])[0] for u in utts]
        arrays = {f"m{i}": m.numpy().astype(np.float16) for i, m in enumerate(mels)}
        np.savez(stem.with_suffix(".npz"), **arrays)
        meta = {"texts": [u.text for u in utts], "voices": [u.voice for u in utts]}
        meta["phonemes"] = [phonemize(t, lexicon) for t in meta["texts"]]
        stem.with_suffix(".json").write_text(json.dumps(meta))
    meta = json.loads(stem.with_suffix(".json").read_text())
    data = np.load(stem.with_suffix(".npz"))
    mels = [torch.from_numpy(data[f"m{i}"].astype(np.float32)) for i in range(n)]
    return SpeechSet(mels, meta["texts"], meta["voices"], meta["phonemes"])


def lexicon_cached(cache: Path) -> dict[str, str]:
    path = cache / "lexicon.json"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(build_lexicon(), ensure_ascii=False, indent=1))
    return json.loads(path.read_text())
