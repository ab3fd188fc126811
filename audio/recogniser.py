"""A small CTC phoneme recogniser (Graves et al. 2006) over log-mel frames: PER and Frechet features for speech."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from mmaccel.checkpoint import load_checked, read_state_dict


class PhonemeRecogniser(nn.Module):
    """Convolutions then a bidirectional GRU over per-utterance normalised log-mel; CTC over ``symbols``
    (index 0 is the CTC blank)."""

    def __init__(self, symbols: list[str], hidden: int = 128):
        super().__init__()
        self.symbols = list(symbols)
        self.convs = nn.Sequential(
            nn.Conv1d(80, 192, 5, padding=2), nn.GELU(), nn.Conv1d(192, 192, 5, padding=2), nn.GELU()
        )
        self.rnn = nn.GRU(192, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, len(symbols) + 1)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, T, 80]`` log-mel -> ``[B, T, 2H]`` recogniser states."""
        mel = (mel - mel.mean((1, 2), keepdim=True)) / mel.std((1, 2), keepdim=True).clamp(min=1e-3)
        return self.rnn(self.convs(mel.transpose(1, 2)).transpose(1, 2))[0]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(mel)).log_softmax(-1)

    @torch.no_grad()
    def transcribe(self, mel: torch.Tensor) -> str:
        """Greedy CTC decoding of one utterance ``[T, 80]``."""
        best = self(mel[None])[0].argmax(-1)
        keep = torch.ones_like(best, dtype=torch.bool)
        keep[1:] = best[1:] != best[:-1]
        return "".join(self.symbols[i - 1] for i in best[keep & (best > 0)].tolist())

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PhonemeRecogniser:
        folder = Path(folder)
        config = json.loads((folder / "recogniser_config.json").read_text())
        model = cls(config["symbols"], config["hidden"])
        path = folder / "recogniser.safetensors"
        load_checked(model, read_state_dict(path), str(path))
        return model.eval()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (one row of the table at a time: utterances are short)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def phoneme_error_rate(hypotheses: list[str], references: list[str]) -> float:
    """Edits over reference symbols (word spaces excluded), pooled over utterances."""
    strip = lambda s: s.replace(" ", "")  # noqa: E731
    edits = sum(edit_distance(strip(h), strip(r)) for h, r in zip(hypotheses, references))
    return edits / max(sum(len(strip(r)) for r in references), 1)
