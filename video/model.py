"""The video GPT: a class-conditional Llama decoder (LlamaGen's architecture, Sun et al. 2024) over VQ tokens.

Clips are ``frames`` VQ token grids in raster order, frame after frame (:class:`~mmaccel.video.layout.VideoLayout`).
The model is ``transformers``' ``LlamaForCausalLM`` driven through the core's :class:`~mmaccel.models.HFCausalLM`;
its vocabulary is the VQ codebook, then one token per class, then the null class (classifier-free guidance's
unconditional prompt). Logits are cut to the codebook so class tokens are never generated. A config with
``slot_period`` builds the core's :class:`~mmaccel.models.slot_llama.SlotLlama`, which adds a learned embedding of
each token's cell in its frame (``train_gpt --cell-slots``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict
from mmaccel.io import write_atomic
from mmaccel.models import HFCausalLM, ModelOutput, SlotCache, TokenPrompt
from mmaccel.models.slot_llama import check_slot_layout, new_llama

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Named sizes: "video-mini" is the default model (what ~10 shared CPU minutes can train), "video-tiny" is for
#: tests; "video-small" is the size to train with more time.
VIDEO_CONFIGS = {
    "video-small": dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4),
    "video-mini": dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=3),
    "video-tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
}


def video_config(name: str, codebook_size: int, num_classes: int, num_tokens: int) -> LlamaConfig:
    """A Llama config of size ``name``: ``codebook_size`` image tokens, then ``num_classes`` + 1 class tokens."""
    if name not in VIDEO_CONFIGS:
        raise ValueError(f"unknown video config {name!r}; choose one of {', '.join(VIDEO_CONFIGS)}")
    return LlamaConfig(
        vocab_size=codebook_size + num_classes + 1,
        max_position_embeddings=num_tokens + 1,
        tie_word_embeddings=False,
        bos_token_id=codebook_size,
        eos_token_id=codebook_size,
        # No padding token: the embedding row of a pad id gets no gradient, and codebook_size is class 0.
        pad_token_id=None,
        **VIDEO_CONFIGS[name],
    )


def sink_token_id(codebook_size: int, num_classes: int) -> int:
    """The sink token's id (``train_gpt --sink``): the one after the null class."""
    return codebook_size + num_classes + 1


def prompt_head(condition: torch.Tensor, sink: int | None) -> torch.Tensor:
    """``[n, 1]`` condition token ids (class or null), or ``[n, 2]`` with the ``sink`` before them: the tokens a
    sequence starts with, in training, evaluation and generation alike."""
    head = condition[:, None]
    return head if sink is None else torch.cat([torch.full_like(head, sink), head], 1)


class VideoGPT(HFCausalLM):
    """The video model as a :class:`~mmaccel.models.TokenModel`: prompts are one class token, after a ``sink``
    token where the model was trained with one (``train_gpt --sink``: the first position of a sequence tends to
    become an attention sink, whose content the model learns to ignore; a token of its own there leaves the class
    token free to be read).

    ``vocab_size`` is the codebook size: class tokens exist only as inputs.
    """

    def __init__(
        self, model: LlamaForCausalLM, codebook_size: int, num_classes: int, frames: int, grid: int,
        sink: int | None = None,
    ):
        super().__init__(model)
        self.sink = sink
        self.codebook_size = codebook_size
        self.vocab_size = codebook_size
        self.num_classes = num_classes
        self.frames = frames
        self.grid = grid

    @property
    def null_class(self) -> int:
        return self.codebook_size + self.num_classes

    @property
    def num_tokens(self) -> int:
        return self.frames * self.grid * self.grid

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput:
        out = super().forward(tokens, positions, cache, output_hidden)
        # Class tokens are conditions, never outputs.
        return ModelOutput(out.logits[..., : self.codebook_size], out.hidden)

    def class_prompt(self, labels: torch.Tensor) -> TokenPrompt:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"class labels must be in [0, {self.num_classes}), got {labels.tolist()}")
        ids = prompt_head(labels + self.codebook_size, self.sink)
        lengths = torch.full((len(ids),), ids.shape[1], dtype=torch.long, device=self.device)
        return TokenPrompt(ids.to(self.device), lengths)

    def unconditional_prompt(self, prompt: TokenPrompt) -> TokenPrompt:
        # The same length as the conditioned prompt, every token the null class (after the sink, where there is one).
        ids = torch.full_like(prompt.ids, self.null_class)
        if self.sink is not None:
            ids[:, 0] = self.sink
        return TokenPrompt(ids, prompt.lengths.clone())

    def to(self, device: str | torch.device) -> VideoGPT:
        self.model.to(device)
        return self

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def save_video_gpt(model: LlamaForCausalLM, meta: dict, out: Path, name: str = "gpt") -> Path:
    """``<out>/<name>.safetensors`` and ``<out>/<name>_config.json`` (Llama config + ``meta``), atomically."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.safetensors"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, tmp))
    full = {"llama": model.config.to_diff_dict(), **meta}
    write_atomic(out / f"{name}_config.json", lambda tmp: Path(tmp).write_text(json.dumps(full, indent=2) + "\n"))
    return path


def load_video_gpt(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> VideoGPT:
    """The video GPT at ``path`` (a ``.safetensors`` file or a folder holding ``gpt.safetensors``; default: the
    shipped model). Missing, corrupt or mismatched files raise :class:`~mmaccel.checkpoint.CheckpointError`."""
    path = Path(path) if path is not None else WEIGHTS_DIR / "gpt.safetensors"
    if path.is_dir():
        path = path / "gpt.safetensors"
    cfg_path = path.with_name(path.name.removesuffix(".safetensors") + "_config.json")
    if not cfg_path.is_file():
        raise CheckpointError(f"video model config not found: {str(cfg_path)!r}")
    try:
        meta = json.loads(cfg_path.read_text())
        config = LlamaConfig(**meta["llama"])
        codebook, classes = int(meta["codebook_size"]), int(meta["num_classes"])
        frames, grid = int(meta["frames"]), int(meta["grid"])
        sink = meta.get("sink_token")
        sink = None if sink is None else int(sink)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"video model config {str(cfg_path)!r} is not valid: {err}") from err
    if sink is not None and sink != sink_token_id(codebook, classes):
        raise CheckpointError(f"video model config {str(cfg_path)!r}: sink_token {sink} != codebook + classes + 1")
    expected = codebook + classes + 1 + (sink is not None)
    if config.vocab_size != expected:
        raise CheckpointError(
            f"video model config {str(cfg_path)!r}: vocab_size {config.vocab_size} != codebook + classes + 1"
            + (" + sink" if sink is not None else "")
        )
    where = f"video model config {str(cfg_path)!r}"
    check_slot_layout(config, grid * grid, 1 + (sink is not None), where, f"the {grid}x{grid} frame grid")
    model = new_llama(config)
    load_checked(model, read_state_dict(path), str(path))
    return VideoGPT(model.to(device).eval(), codebook, classes, frames, grid, sink)
