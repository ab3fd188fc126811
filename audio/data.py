"""Speech data made here: ``espeak-ng`` speaks generated sentences of a small vocabulary.

Sentences follow one grammar (``the red square is left of the star``); each utterance gets a voice variant, a
pitch and a speed drawn from its own seed. Phonemes come from a lexicon (each vocabulary word's IPA from
``espeak-ng --ipa``), joined with word spaces, so that generation needs no ``espeak-ng``: the lexicon ships with
the model (``weights/lexicon.json``).
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
COLORS = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple")
SHAPES = ("square", "circle", "star", "triangle", "cube", "ring")
RELATIONS = ("left of", "right of", "above", "below", "next to", "behind", "under")
#: Voice names the model is conditioned on: espeak-ng ``en-us`` variants.
VOICES = ("m1", "m3", "f1", "f3")


def require_espeak() -> str:
    """The ``espeak-ng`` executable, or a clear error saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError("espeak-ng is not installed: run `apt-get update && apt-get install -y espeak-ng`")
    return path


def words() -> list[str]:
    """Every word the grammar uses."""
    out = {"the", "is"}
    for phrase in COLORS + SHAPES + RELATIONS:
        out.update(phrase.split())
    return sorted(out)


def sentence(rng: random.Random) -> str:
    """``the COLOR SHAPE is RELATION the COLOR SHAPE``."""
    c1, c2 = rng.choice(COLORS), rng.choice(COLORS)
    s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
    return f"the {c1} {s1} is {rng.choice(RELATIONS)} the {c2} {s2}"


def build_lexicon(vocabulary: Sequence[str] | None = None) -> dict[str, str]:
    """Word -> IPA string from ``espeak-ng --ipa`` (stress marks kept)."""
    exe = require_espeak()
    lexicon = {}
    for word in vocabulary or words():
        ipa = subprocess.run([exe, "-q", "--ipa", "-v", "en-us", word], capture_output=True, text=True, check=True)
        lexicon[word] = ipa.stdout.strip()
    return lexicon


def phonemize(text: str, lexicon: dict[str, str]) -> str:
    """IPA of ``text`` word by word; unknown words are an error naming them (the lexicon is the vocabulary)."""
    tokens = text.lower().replace(",", " ").replace(".", " ").split()
    if not tokens:
        raise ValueError("text: nothing speakable (empty, or only punctuation/spaces)")
    unknown = [w for w in tokens if w not in lexicon]
    if unknown:
        raise ValueError(f"text: word(s) {unknown} are not in the model's lexicon ({len(lexicon)} words)")
    return " ".join(lexicon[w] for w in tokens)


@dataclass
class Utterance:
    text: str
    voice: str
    pitch: int
    speed: int
    waveform: np.ndarray  # float32 [T] at SAMPLE_RATE


def speak(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    """``espeak-ng`` speaks ``text``; the waveform is resampled to :data:`SAMPLE_RATE` and trimmed of silence."""
    import soundfile

    exe = require_espeak()
    wav = subprocess.run(
        [exe, "-v", f"en-us+{voice}", "-p", str(pitch), "-s", str(speed), "--stdout", text],
        capture_output=True,
        check=True,
    ).stdout
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected {ESPEAK_RATE}")
    audio = resample_poly(audio, 320, 441).astype(np.float32)
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    if len(loud):
        audio = audio[max(loud[0] - 800, 0) : loud[-1] + 800]
    return audio


def make_utterances(n: int, seed: int) -> list[Utterance]:
    """``n`` utterances; utterance ``i`` is drawn from ``seed`` and ``i`` alone (a set is reproducible)."""
    out = []
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        text = sentence(rng)
        voice, pitch, speed = rng.choice(VOICES), rng.randint(35, 65), rng.randint(165, 215)
        out.append(Utterance(text, voice, pitch, speed, speak(text, voice, pitch, speed)))
    return out
