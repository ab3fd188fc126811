"""The default text-to-speech LM: a ``MusicgenForCausalLM`` and its prefix table, saved as one safetensors file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict

from .musicgen import MusicgenStreams, SpeechPrompt

PAD, START = "<pad>", "<start>"


def symbols_for(lexicon: dict[str, str]) -> list[str]:
    """Prefix symbols: padding, start, a word space, then every IPA character of the lexicon."""
    chars = sorted({c for ipa in lexicon.values() for c in ipa} - {" "})
    return [PAD, START, " ", *chars]


class SpeechLM(nn.Module):
    """MusicGen's decoder (``musicgen``) conditioned on ``[voice, phonemes..., start]`` (``prefix``)."""

    def __init__(self, musicgen: MusicgenForCausalLM, symbols: list[str], voices: list[str], max_steps: int = 256):
        super().__init__()
        self.musicgen = musicgen
        self.symbols, self.voices, self.max_steps = list(symbols), list(voices), max_steps
        self.prefix = nn.Embedding(len(symbols) + len(voices), musicgen.config.hidden_size)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.streams = MusicgenStreams(musicgen, self.prefix, stop_token=musicgen.config.vocab_size - 1)

    def encode_prefix(self, phonemes: str, voice: str) -> torch.Tensor:
        """Symbol ids of ``[voice, phonemes..., start]``; an unknown voice or symbol is an error naming it."""
        if voice not in self.voices:
            raise ValueError(f"voice: unknown voice {voice!r}; choose one of {self.voices}")
        unknown = sorted({c for c in phonemes if c not in self.index})
        if unknown:
            raise ValueError(f"text: phoneme symbols {unknown} are not in the model's symbol table")
        ids = [len(self.symbols) + self.voices.index(voice)] + [self.index[c] for c in phonemes] + [self.index[START]]
        return torch.tensor(ids, dtype=torch.long)

    def prompt(self, prefixes: list[torch.Tensor]) -> SpeechPrompt:
        width = max(len(p) for p in prefixes)
        ids = torch.zeros(len(prefixes), width, dtype=torch.long)
        for row, p in enumerate(prefixes):
            ids[row, : len(p)] = p
        return SpeechPrompt(ids, torch.tensor([len(p) for p in prefixes]))

    def config_dict(self) -> dict:
        return {
            "musicgen": self.musicgen.config.to_dict(),
            "symbols": self.symbols,
            "voices": self.voices,
            "max_steps": self.max_steps,
        }

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> SpeechLM:
        folder = Path(folder)
        config_path = folder / "lm_config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"LM config {config_path} not found")
        try:
            config = json.loads(config_path.read_text())
            mg = MusicgenDecoderConfig(**{k: v for k, v in config["musicgen"].items() if k != "model_type"})
            lm = cls(MusicgenForCausalLM(mg), config["symbols"], config["voices"], config["max_steps"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"LM config {config_path} is not a speech LM config: {err}") from None
        path = folder / "lm.safetensors"
        load_checked(lm, read_state_dict(path), str(path))
        return lm.eval()
