"""The default speech codec: a residual VQ over log-mel frames, decoded to audio by Griffin-Lim.

Frames are 50 per second (hop 320 at 16 kHz). The encoder (a few 1-D convolutions over time) maps 80 log-mel
bins to a latent that a residual vector quantiser (SoundStream, Zeghidour et al. 2021) codes with ``K``
codebooks of 256 entries: codebook ``k`` quantises what codebooks ``< k`` left. The decoder maps the summed code
vectors back to log-mel; :func:`griffin_lim` (Griffin & Lim 1984) turns that into a waveform through the mel
filterbank's pseudo-inverse and ``torch.stft`` (torchaudio has no build for this torch).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmaccel.checkpoint import load_checked, read_state_dict

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 320
N_MELS = 80


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> torch.Tensor:
    """HTK-style triangular filters ``[n_mels, n_fft // 2 + 1]`` from 0 Hz to Nyquist."""
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    points = torch.linspace(mel(0.0), mel(rate / 2), n_mels + 2)
    hz = 700.0 * (10 ** (points / 2595.0) - 1.0)
    bins = torch.linspace(0, rate / 2, n_fft // 2 + 1)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lo) / (mid - lo)
    down = (hi - bins[None]) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0)


_FILTERS: dict[str, torch.Tensor] = {}


def _filters(device: torch.device) -> torch.Tensor:
    key = str(device)
    if key not in _FILTERS:
        _FILTERS[key] = mel_filterbank().to(device)
    return _FILTERS[key]


def log_mel(waveform: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` waveforms at 16 kHz -> log-mel ``[B, frames, 80]`` (magnitude mel, natural log)."""
    window = torch.hann_window(N_FFT, device=waveform.device)
    spec = torch.stft(waveform, N_FFT, HOP, window=window, return_complex=True, center=True).abs()
    mel = torch.einsum("mf,bft->btm", _filters(waveform.device), spec)
    return torch.log(mel.clamp(min=1e-5))


def griffin_lim(logmel: torch.Tensor, iterations: int = 48, seed: int = 0) -> torch.Tensor:
    """log-mel ``[B, frames, 80]`` -> waveforms ``[B, (frames - 1) * 320]``.

    The magnitude comes from the filterbank's pseudo-inverse (clamped at 0); the phase from Griffin-Lim with
    the momentum of Perraudin et al. 2013 (0.99), from a seeded random start so that decoding is reproducible.
    """
    filters = _filters(logmel.device)
    magnitude = torch.einsum("fm,btm->bft", torch.linalg.pinv(filters), logmel.exp()).clamp(min=0.0)
    window = torch.hann_window(N_FFT, device=logmel.device)
    length = (logmel.shape[1] - 1) * HOP
    g = torch.Generator(device="cpu").manual_seed(seed)
    angles = torch.exp(2j * math.pi * torch.rand(magnitude.shape, generator=g)).to(logmel.device)
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        audio = torch.istft(magnitude * angles, N_FFT, HOP, window=window, length=length)
        rebuilt = torch.stft(audio, N_FFT, HOP, window=window, return_complex=True)
        accelerated = rebuilt - 0.99 / 1.99 * previous
        previous = rebuilt
        angles = accelerated / accelerated.abs().clamp(min=1e-8)
    audio = torch.istft(magnitude * angles, N_FFT, HOP, window=window, length=length)
    return audio / audio.abs().amax(-1, keepdim=True).clamp(min=1e-3) * 0.9


@dataclass
class CodecConfig:
    n_mels: int = N_MELS
    hidden: int = 256
    latent: int = 64
    codebooks: int = 4
    codebook_size: int = 256


class ResidualVQ(nn.Module):
    """``K`` codebooks, each quantising the residual the ones before it left (SoundStream's RVQ)."""

    def __init__(self, codebooks: int, size: int, dim: int):
        super().__init__()
        self.codebooks = nn.Parameter(torch.randn(codebooks, size, dim) * 0.1)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` latents -> ``[..., K]`` codes."""
        residual, codes = z, []
        for book in self.codebooks:
            idx = torch.cdist(residual.reshape(-1, residual.shape[-1]), book).argmin(-1).view(residual.shape[:-1])
            codes.append(idx)
            residual = residual - book[idx]
        return torch.stack(codes, -1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``[..., K]`` codes -> summed code vectors ``[..., D]``."""
        return sum(book[codes[..., k]] for k, book in enumerate(self.codebooks))

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Straight-through quantisation: (quantised latents, codes, codebook + commitment loss)."""
        residual, total, loss, codes = z, torch.zeros_like(z), z.new_zeros(()), []
        for book in self.codebooks:
            idx = torch.cdist(residual.detach().reshape(-1, z.shape[-1]), book.detach()).argmin(-1)
            idx = idx.view(z.shape[:-1])
            chosen = book[idx]
            loss = loss + F.mse_loss(chosen, residual.detach()) + 0.25 * F.mse_loss(residual, chosen.detach())
            total = total + chosen
            residual = residual - chosen.detach()
            codes.append(idx)
        return z + (total - z).detach(), torch.stack(codes, -1), loss


def _convs(channels: list[int], kernel: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(channels[:-1], channels[1:])):
        layers.append(nn.Conv1d(a, b, kernel, padding=kernel // 2))
        if i < len(channels) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class MelCodec(nn.Module):
    """Log-mel frames <-> ``K`` residual-VQ codes per frame (50 frames per second)."""

    def __init__(self, config: CodecConfig | None = None):
        super().__init__()
        self.config = c = config or CodecConfig()
        self.encoder = _convs([c.n_mels, c.hidden, c.hidden, c.latent])
        self.decoder = _convs([c.latent, c.hidden, c.hidden, c.n_mels])
        self.rvq = ResidualVQ(c.codebooks, c.codebook_size, c.latent)
        self.register_buffer("mel_mean", torch.zeros(c.n_mels))
        self.register_buffer("mel_std", torch.ones(c.n_mels))

    def _latent(self, mel: torch.Tensor) -> torch.Tensor:
        x = ((mel - self.mel_mean) / self.mel_std).transpose(1, 2)
        return self.encoder(x).transpose(1, 2)

    def _mel(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent.transpose(1, 2)).transpose(1, 2) * self.mel_std + self.mel_mean

    @torch.no_grad()
    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """log-mel ``[B, T, 80]`` -> codes ``[B, T, K]``."""
        return self.rvq.encode(self._latent(mel))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, T, K]`` -> log-mel ``[B, T, 80]``."""
        return self._mel(self.rvq.decode(codes))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training: (reconstructed log-mel, codes, quantiser loss)."""
        quantised, codes, loss = self.rvq.quantise(self._latent(mel))
        return self._mel(quantised), codes, loss

    def code_vectors(self) -> torch.Tensor:
        """``[K, size, D]``: the codebook vectors, the "nearby token" tables of LANTERN and GSD."""
        return self.rvq.codebooks.detach()

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> MelCodec:
        folder = Path(folder)
        config_path = folder / "codec_config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"codec config {config_path} not found")
        try:
            config = CodecConfig(**json.loads(config_path.read_text()))
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"codec config {config_path} is not a codec config: {err}") from None
        model = cls(config)
        path = folder / "codec.safetensors"
        load_checked(model, read_state_dict(path), str(path))
        return model.eval()

    def config_dict(self) -> dict:
        return asdict(self.config)
