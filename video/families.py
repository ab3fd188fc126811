"""The real video families behind ``--family`` (``mmaccel generate video`` and ``mmaccel bench video``).

* ``emu3``: Emu3 text-to-video (:mod:`mmaccel.video.emu3`), a transformers ``Emu3ForConditionalGeneration`` folder;
  the condition is a text prompt, the latent grid (``frames`` x ``height`` x ``width``) is the caller's, and clips
  decode to pixels through ``Emu3VQVAE``.
* ``cosmos``: Cosmos-Predict1 autoregressive video-to-world (:mod:`mmaccel.video.cosmos`), an official folder; the
  condition is DV8x16x16 token ids of whole latent frames, and the continuation is returned as tokens (the
  DV8x16x16 decoder ships only as TorchScript, which this library does not run).

Both give the CLI and the bench one shape: a prompt from conditions, a core decoder per method spec, the number of
tokens to generate, acceptance maps per latent frame, and (where there is a decoder) uint8 frames.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmaccel.methods import build_decoder
from mmaccel.models import TokenPrompt
from mmaccel.sampling import SamplingConfig

from .layout import VideoLayout
from .temporal import video_inits

FAMILIES = ("emu3", "cosmos")


class Emu3Family:
    """Emu3 text-to-video over a latent grid of ``frames`` x ``height`` x ``width`` codes."""

    name = "emu3"
    condition = "prompt"
    default_guidance = 3.0  # BAAI's image_generation.py

    def __init__(self, video: Any):
        self.video = video

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, frames: int, height: int, width: int) -> Emu3Family:
        from .emu3 import Emu3Video

        return cls(Emu3Video.from_pretrained(folder, frames=frames, height=height, width=width))

    def prompt(self, conditions: list[str]) -> TokenPrompt:
        return self.video.prompt(conditions)

    def num_tokens(self, prompt: TokenPrompt) -> int:
        return self.video.layout.num_tokens

    def timing_prompt(self, batch: int) -> TokenPrompt:
        """Equal-length rows for timing forwards: the negative prompt itself, so the guided model's cond and
        uncond rows sit at the same positions (a longer uncond row would run past the timing cache)."""
        from .emu3 import NEGATIVE_PROMPT

        return self.prompt([NEGATIVE_PROMPT] * batch)

    def guided_model(self, guidance_scale: float) -> Any:
        from mmaccel.models import CFGModel

        return CFGModel(self.video.model, guidance_scale) if guidance_scale != 1.0 else self.video.model

    def decoder(self, name: str, params: dict, sampling: SamplingConfig, guidance_scale: float, prompt: TokenPrompt):
        """The core decoder of method ``name`` with ``params`` (Emu3's inits: ``temporal-repeat``, ``vertical``)."""
        return self.video.build_decoder(name, sampling, guidance_scale, **params)

    def maps(self, accept_step: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` accept steps -> ``[B, frames, height, width]`` (separators dropped)."""
        return self.video.layout.grids(accept_step)

    def frames(self, tokens: torch.Tensor) -> list[np.ndarray]:
        """uint8 clips ``[F, H, W, 3]`` (``F`` = latent frames x the VQ's temporal factor)."""
        return list(self.video.decode(tokens).permute(0, 1, 3, 4, 2).numpy())


class CosmosFamily:
    """Cosmos-Predict1 AR video-to-world: continue whole conditioning latent frames to the model's clip length."""

    name = "cosmos"
    condition = "condition"
    default_guidance = 1.0  # the official AR sampler runs unguided

    def __init__(self, model: Any):
        self.model = model
        self.frame_tokens = model.tokens_per_frame

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> CosmosFamily:
        from .cosmos import load_cosmos_ar

        return cls(load_cosmos_ar(folder))

    def prompt(self, conditions: list[list[int]]) -> TokenPrompt:
        lengths = {len(c) for c in conditions}
        if len(lengths) != 1:
            raise ValueError(f"every clip needs the same number of conditioning tokens, got lengths {sorted(lengths)}")
        n = lengths.pop()
        # Whole latent frames keep the generated tokens frame-aligned, which the temporal inits index by.
        if n % self.frame_tokens:
            t, h, w = self.model.latent_shape
            raise ValueError(
                f"conditioning holds {n} tokens; give whole latent frames of {h} x {w} = {self.frame_tokens} tokens"
            )
        return self.model.prompt(conditions)

    def num_tokens(self, prompt: TokenPrompt) -> int:
        return self.model.num_tokens - prompt.ids.shape[1]

    def timing_prompt(self, batch: int) -> TokenPrompt:
        """Equal-length rows for timing forwards: one conditioning latent frame of token 0."""
        return self.prompt([[0] * self.frame_tokens] * batch)

    def layout(self, prompt: TokenPrompt) -> VideoLayout:
        """The generated part of the clip: the latent frames after the conditioning ones."""
        t, h, w = self.model.latent_shape
        return VideoLayout(t - prompt.ids.shape[1] // self.frame_tokens, h, w)

    def guided_model(self, guidance_scale: float) -> Any:
        if guidance_scale != 1.0:
            raise ValueError("--guidance-scale: Cosmos AR prompts have no unconditional counterpart; use 1")
        return self.model

    def decoder(self, name: str, params: dict, sampling: SamplingConfig, guidance_scale: float, prompt: TokenPrompt):
        """The core decoder of method ``name`` with ``params``; the video inits index the generated frames."""
        self.guided_model(guidance_scale)
        inits = video_inits(self.layout(prompt), self.model.vocab_size)
        return build_decoder(self.model, name, params, sampling=sampling, inits=inits)

    def maps(self, accept_step: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` accept steps of the generated tokens -> ``[B, generated frames, height, width]``."""
        _, h, w = self.model.latent_shape
        return accept_step.reshape(accept_step.shape[0], -1, h, w)

    frames = None  # no pixels: the DV8x16x16 decoder is TorchScript


def load_video_family(
    name: str, folder: str | os.PathLike | None, frames: int | None = None, height: int | None = None,
    width: int | None = None,
) -> Emu3Family | CosmosFamily:
    """The ``--family`` ``name`` loaded from ``--model`` ``folder``; refusals name the flag at fault."""
    from transformers.utils import logging as hf_logging

    # transformers' load reports and progress bars would sit between the CLI's own lines (and its errors).
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return _load(name, folder, frames, height, width)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load(name: str, folder: Any, frames: int | None, height: int | None, width: int | None) -> Any:
    if name not in FAMILIES:
        raise ValueError(f"--family must be one of {', '.join(FAMILIES)}, got {name!r}")
    if folder is None:
        raise ValueError(f"--family {name} needs --model, the checkpoint folder")
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"--model {str(folder)!r}: folder not found")
    grid = {"--frames": frames, "--height": height, "--width": width}
    if name == "cosmos":
        given = [flag for flag, v in grid.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: a Cosmos folder fixes the latent grid (video_latent_shape)")
        try:
            return CosmosFamily.from_pretrained(folder)
        except ValueError as err:  # CheckpointError too: the folder is not a Cosmos AR checkpoint
            raise ValueError(f"--model {str(folder)!r} (--family cosmos): {err}") from None
    missing = [flag for flag, v in grid.items() if v is None]
    if missing:
        raise ValueError(f"--family emu3 needs the latent grid: give {', '.join(missing)}")
    for flag, v in grid.items():
        if v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    try:
        return Emu3Family.from_pretrained(folder, frames, height, width)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"--model {str(folder)!r} (--family emu3): {err}") from None


def read_conditions(path: str | os.PathLike, flag: str = "--condition") -> list[list[int]]:
    """Conditioning token ids from ``.npy`` (``[N]`` or ``[B, N]`` integers) or ``.json`` (a list, or a list of
    lists); each row is one clip."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r}: file not found")
    try:
        if path.suffix.lower() == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix.lower() == ".json":
            data = np.asarray(json.loads(path.read_text()))
        else:
            raise ValueError(f"{flag} {str(path)!r}: use a .npy or .json file of token ids")
    except (OSError, ValueError) as err:
        if str(err).startswith(flag):
            raise
        raise ValueError(f"{flag} {str(path)!r}: not readable token ids ({err})") from None
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2 or data.shape[1] == 0 or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"{flag} {str(path)!r}: expected integer token ids [N] or [clips, N], got "
                         f"{data.dtype} {tuple(data.shape)}")
    return data.astype(np.int64).tolist()


__all__ = ["FAMILIES", "CosmosFamily", "Emu3Family", "load_video_family", "read_conditions"]
