"""The mesh GPT: a class-conditional Llama decoder (LlamaGen's architecture, Sun et al. 2024) over face tokens.

It is ``transformers``' ``LlamaForCausalLM`` driven through the core's :class:`~mmaccel.models.HFCausalLM`
adapter; the condition is one class token before ``bos`` (:mod:`mmaccel.mesh.tokenizer`), and the null class
token makes the unconditional prompt of classifier-free guidance. A config with ``slot_period`` builds the core's
:class:`~mmaccel.models.slot_llama.SlotLlama`, the same decoder with a learned embedding of each token's slot in
the face (which corner, which coordinate). Weights are
one safetensors file with a ``<name>_config.json`` beside it holding the Llama config and the mesh vocabulary.
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
from mmaccel.models import HFCausalLM, TokenPrompt
from mmaccel.models.slot_llama import SlotLlama, check_slot_layout, new_llama, with_slots

from .tokenizer import TOKENS_PER_FACE, MeshVocab

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Named sizes: "mesh-small" is the default model, "mesh-tiny" is for tests.
MESH_CONFIGS = {
    "mesh-small": dict(hidden_size=256, intermediate_size=640, num_hidden_layers=4, num_attention_heads=4),
    "mesh-tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
}


def mesh_config(name: str, vocab: MeshVocab, max_faces: int, face_slots: bool = False) -> LlamaConfig:
    """A Llama config of size ``name`` over ``vocab``, long enough for ``max_faces`` faces; ``face_slots`` adds
    the face layout's slots (:func:`with_face_slots`)."""
    if name not in MESH_CONFIGS:
        raise ValueError(f"unknown mesh config {name!r}; choose one of {', '.join(MESH_CONFIGS)}")
    extra = {"slot_period": TOKENS_PER_FACE, "slot_offset": PROMPT_TOKENS} if face_slots else {}
    return LlamaConfig(
        vocab_size=vocab.size,
        max_position_embeddings=context_length(max_faces),
        tie_word_embeddings=False,
        bos_token_id=vocab.bos,
        eos_token_id=vocab.eos,
        pad_token_id=vocab.eos,
        **MESH_CONFIGS[name],
        **extra,
    )


#: The prompt's positions (class, bos) before the first face: they share one slot of their own.
PROMPT_TOKENS = 2


def with_face_slots(model: LlamaForCausalLM) -> SlotLlama:
    """``model``'s weights in a face-slot :class:`~mmaccel.models.slot_llama.SlotLlama` (table at zero: the same
    logits).

    Teacher forced, the plain GPT picked the right ``z`` of a repeated vertex 98-100% of the time but its ``y`` and
    ``x`` only 85-95% (``python -m mmaccel.mesh.training.eval_gpt``): rotary positions do not say which
    coordinate a token is."""
    return with_slots(model, TOKENS_PER_FACE, PROMPT_TOKENS)


def context_length(max_faces: int) -> int:
    """Positions a sequence of ``max_faces`` faces takes: class, bos, 9 per face, eos."""
    return 2 + 9 * max_faces + 1


class MeshGPT(HFCausalLM):
    """The mesh model as a :class:`~mmaccel.models.TokenModel`, with its vocabulary and face budget.

    Prompts are ``[class, bos]`` rows (:meth:`class_prompt`); :meth:`unconditional_prompt` swaps in the null
    class, which :class:`~mmaccel.models.CFGModel` asks for.
    """

    def __init__(self, model: LlamaForCausalLM, vocab: MeshVocab, max_faces: int):
        super().__init__(model)
        self.vocab = vocab
        self.max_faces = max_faces

    def class_prompt(self, labels: torch.Tensor) -> TokenPrompt:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.vocab.num_classes):
            raise ValueError(f"class labels must be in [0, {self.vocab.num_classes}), got {labels.tolist()}")
        ids = torch.stack([self.vocab.class_token(labels), torch.full_like(labels, self.vocab.bos)], 1)
        return TokenPrompt(ids.to(self.device), torch.full((len(labels),), 2, device=self.device))

    def unconditional_prompt(self, prompt: TokenPrompt) -> TokenPrompt:
        ids = prompt.ids.clone()
        ids[:, 0] = self.vocab.null_class
        return TokenPrompt(ids, prompt.lengths.clone())

    def to(self, device: str | torch.device) -> MeshGPT:
        self.model.to(device)
        return self

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def save_mesh_gpt(model: LlamaForCausalLM, vocab: MeshVocab, max_faces: int, out: Path, name: str = "gpt") -> Path:
    """``<out>/<name>.safetensors`` and ``<out>/<name>_config.json``, both written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.safetensors"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, tmp))
    meta = {
        "llama": model.config.to_diff_dict(),
        "levels": vocab.levels,
        "num_classes": vocab.num_classes,
        "max_faces": max_faces,
    }
    write_atomic(out / f"{name}_config.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return path


def read_config(path: str | os.PathLike) -> tuple[LlamaConfig, MeshVocab, int]:
    """The Llama config, vocabulary and face budget in a ``<name>_config.json``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"mesh model config not found: {str(path)!r}")
    try:
        meta = json.loads(path.read_text())
        vocab = MeshVocab(int(meta["levels"]), int(meta["num_classes"]))
        config = LlamaConfig(**meta["llama"])
        max_faces = int(meta["max_faces"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"mesh model config {str(path)!r} is not valid: {err}") from err
    if config.vocab_size != vocab.size:
        raise CheckpointError(f"mesh model config {str(path)!r}: vocab_size {config.vocab_size} != {vocab.size}")
    check_slot_layout(config, TOKENS_PER_FACE, PROMPT_TOKENS, f"mesh model config {str(path)!r}", "the face layout")
    return config, vocab, max_faces


def load_mesh_gpt(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> MeshGPT:
    """The mesh GPT at ``path`` (a ``.safetensors`` file, or a folder holding ``gpt.safetensors``; default: the
    shipped model). Missing, corrupt or mismatched weights raise :class:`~mmaccel.checkpoint.CheckpointError`."""
    path = Path(path) if path is not None else WEIGHTS_DIR / "gpt.safetensors"
    if path.is_dir():
        path = path / "gpt.safetensors"
    config, vocab, max_faces = read_config(path.with_name(path.name.removesuffix(".safetensors") + "_config.json"))
    state = read_state_dict(path)
    model = new_llama(config)
    load_checked(model, state, str(path))
    return MeshGPT(model.to(device).eval(), vocab, max_faces)
