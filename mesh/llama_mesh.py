"""LLaMA-Mesh (Wang et al. 2024, "LLaMA-Mesh: Unifying 3D Mesh Generation with Language Models"): a
Llama-3.1-8B-Instruct fine-tune that writes a mesh as OBJ text inside its chat answer.

The official checkpoint is a plain ``LlamaForCausalLM`` folder with its tokenizer and Llama 3.1's chat template,
so it loads unchanged with ``transformers`` and runs through the core's :class:`~mmaccel.models.HFCausalLM`
adapter with any method of the core's table. Vertices are ``v x y z`` lines of integer coordinates in
``[0, 64)``, faces ``f a b c`` lines of 1-based vertex indices (its data sorts vertices z-y-x and faces by their
lowest vertex, like MeshGPT). The official demo samples at temperature 0.95 with up to 4096 new tokens and stops
at ``eos`` or ``<|eot_id|>``.

Mesh speculation for it is text-level: :class:`LineInit` starts new Jacobi window positions as copies of the
previous line's tokens. With Llama 3's tokenizer every ``v x y z`` line has the same token count (``v``, the
three numbers below 1000 one token each, the spaces, the newline), so the fixed parts of the next line are
proposed exactly, and a sorted vertex often repeats the previous vertex's z and y.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh

from mmaccel.checkpoint import CheckpointError
from mmaccel.methods import build_decoder, parse_method
from mmaccel.models import HFCausalLM, TokenPrompt
from mmaccel.sampling import SamplingConfig

from .stats import mesh_stats
from .tokenizer import DecodeReport, canonical_faces, clean_mesh, normalise, quantise

#: Coordinate bins of LLaMA-Mesh's OBJ text.
OBJ_BINS = 64
#: The official demo's sampling defaults.
DEFAULT_TEMPERATURE = 0.95
DEFAULT_MAX_NEW_TOKENS = 4096
_VERTEX = re.compile(r"^\s*v\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE)
_FACE = re.compile(r"^\s*f\s+(.+)$", re.MULTILINE)


def parse_obj(text: str, bins: int = OBJ_BINS) -> tuple[trimesh.Trimesh, DecodeReport]:
    """The ``v`` / ``f`` lines of ``text`` (other lines, e.g. the chat answer around the OBJ, are ignored) to a
    mesh in the unit cube and a :class:`~mmaccel.mesh.tokenizer.DecodeReport`; never raises on garbage.

    Coordinates are bins ``0 .. bins - 1`` (floats are accepted); face entries may be ``a``, ``a/t`` or ``a/t/n``,
    negative indices count back from the last vertex (OBJ), polygons are fanned into triangles. A vertex line
    that is not three numbers, or a face naming a missing vertex, is dropped and counted in ``bad_tokens``.
    """
    report = DecodeReport(ended=True)
    vertices, bad = [], 0
    for match in _VERTEX.finditer(text):  # one regex pass per line kind; a mesh has hundreds of lines
        try:
            vertices.append([float(x) for x in match.groups()])
        except ValueError:
            bad += 1
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    triangles = []
    for match in _FACE.finditer(text):
        try:
            ids = [int(entry.split("/")[0]) for entry in match.group(1).split()]
        except ValueError:
            bad += 1
            continue
        ids = [i - 1 if i > 0 else len(v) + i for i in ids]  # 1-based; negative: relative to the end
        if len(ids) < 3 or min(ids) < 0 or max(ids) >= len(v):
            bad += 1
            continue
        triangles += [(ids[0], ids[k], ids[k + 1]) for k in range(1, len(ids) - 1)]
    report.bad_tokens = bad
    faces = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    report.faces_read = len(faces)
    corners = v[faces] / (bins - 1) - 0.5 if len(faces) else np.zeros((0, 3, 3))
    return clean_mesh(corners, report), report


def format_obj(mesh: trimesh.Trimesh, bins: int = OBJ_BINS) -> str:
    """``mesh`` as LLaMA-Mesh writes meshes: normalised into the unit cube, quantised to ``bins`` integer bins,
    vertices sorted z-y-x, faces sorted by their lowest vertex, ``v x y z`` then ``f a b c`` lines (1-based)."""
    if len(mesh.faces) == 0:
        raise ValueError("mesh has no faces")
    corners = canonical_faces(quantise(normalise(np.asarray(mesh.vertices, dtype=np.float64)), bins), mesh.faces)
    zyx, inverse = np.unique(corners.reshape(-1, 3), axis=0, return_inverse=True)
    lines = [f"v {x} {y} {z}" for z, y, x in zyx.tolist()]
    lines += [f"f {a} {b} {c}" for a, b, c in (inverse.reshape(-1, 3) + 1).tolist()]
    return "\n".join(lines) + "\n"


class LineInit:
    """Jacobi initialisation ``init(context [B, N], index [B, K], uniforms [B, K]) -> tokens [B, K]`` that copies
    the token one line back: a line as long as the last complete one (newline to newline, or from the start of
    the answer) is assumed, so new position ``i`` copies generated token ``i - L`` (following the copy back past
    the window's start). Rows without a newline so far get uniformly random tokens over ``vocab`` ids."""

    def __init__(self, newline_ids: list[int], vocab: int):
        if not newline_ids:
            raise ValueError("newline_ids must name at least one token")
        self.newline = torch.tensor(sorted(set(newline_ids)))
        self.vocab = vocab

    def __call__(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        start = index[:, :1]
        span = torch.arange(context.shape[1], device=context.device)[None]
        newline = torch.isin(context, self.newline.to(context.device)) & (span < start)
        where = torch.where(newline, span, -1)
        last = where.max(1, keepdim=True).values
        before = torch.where(span < last, where, -1).max(1, keepdim=True).values
        length = (last - before).clamp(min=1)  # before = -1: the first line, from generated token 0
        known = last >= 0
        hops = (index - start) // length + 1
        src = index - hops * length  # in [start - L, start): committed context
        copied = context.gather(1, src.clamp(min=0))
        random = (uniforms * self.vocab).long().clamp_(max=self.vocab - 1)
        return torch.where(known & (src >= 0), copied, random)


@dataclass
class LlamaMeshOutput:
    """The answers' text (up to the stop token), the meshes parsed from them, their reports, tokens and stats."""

    texts: list[str]
    meshes: list[trimesh.Trimesh]
    reports: list[DecodeReport]
    tokens: torch.Tensor
    stats: list[dict[str, Any]] = field(default_factory=list)


class LlamaMeshPipeline:
    """LLaMA-Mesh from a local folder (``config.json``, safetensors weights, tokenizer files), generating with
    plain AR or any method of the core's table (``sjd:init=line`` uses :class:`LineInit`).

    >>> pipe = LlamaMeshPipeline.from_pretrained("/models/LLaMA-Mesh")
    >>> out = pipe("Create a 3D model of a table.", method="sjd:init=line")
    >>> out.meshes[0].export("table.obj")
    """

    def __init__(self, model: HFCausalLM, tokenizer: Any, bins: int = OBJ_BINS):
        self.model = model
        self.tokenizer = tokenizer
        self.bins = bins

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> LlamaMeshPipeline:
        """Load the model and tokenizer in folder ``path`` (local files only, safetensors weights only)."""
        from transformers import AutoTokenizer, LlamaForCausalLM

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"LLaMA-Mesh folder {str(folder)!r} has no config.json")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = LlamaForCausalLM.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, dtype=dtype
            )
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot load LLaMA-Mesh from {str(folder)!r}: {err}") from err
        return cls(HFCausalLM(model.to(device).eval()), tokenizer)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def stop_ids(self) -> list[int]:
        """``eos`` and Llama 3.1's end of turn, where the tokenizer has them (the official demo's terminators)."""
        ids = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|eot_id|>")}
        return sorted(i for i in ids if i is not None and i != self.tokenizer.unk_token_id)

    def newline_ids(self) -> list[int]:
        return self.tokenizer.encode("\n", add_special_tokens=False)[-1:]

    def prompt(self, messages: list[str]) -> TokenPrompt:
        """One user turn per row, through the tokenizer's chat template (its raw text when it has none)."""
        rows = []
        for message in messages:
            if getattr(self.tokenizer, "chat_template", None):
                ids = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": message}], add_generation_prompt=True, tokenize=True
                )
                ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # transformers 5: a BatchEncoding
            else:
                ids = self.tokenizer(message)["input_ids"]
            rows.append(list(ids))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids()[0]
        return TokenPrompt.from_lists(rows, pad_id=pad).to(self.device)

    @torch.no_grad()
    def __call__(
        self,
        messages: str | list[str],
        method: str = "ar",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        progress: bool = True,
        **method_params: Any,
    ) -> LlamaMeshOutput:
        """Answer each message; answer ``i`` uses seed ``seed + i``. ``method`` is a core method spec; the engine
        generates ``max_new_tokens`` for every row, and each answer ends at its first stop token."""
        messages = [messages] if isinstance(messages, str) else list(messages)
        if not messages:
            raise ValueError("messages must not be empty")
        name, params = parse_method(method, "method")
        params.update(method_params)
        vocab = self.model.vocab_size
        inits = {"line": lambda: LineInit(self.newline_ids(), vocab)}
        sampling = SamplingConfig(temperature, top_k, top_p)
        decoder = build_decoder(self.model, name, params, sampling=sampling, inits=inits)
        seeds = [seed + i for i in range(len(messages))]
        out = decoder.generate(self.prompt(messages), max_new_tokens, seeds=seeds, progress=progress)
        tokens, accept = out.tokens.cpu(), out.stats.accept_step.cpu()
        hit = torch.isin(tokens, torch.tensor(self.stop_ids()))
        ends = torch.where(hit.any(1), hit.int().argmax(1), tokens.shape[1])
        texts, meshes, reports, stats = [], [], [], []
        for i, steps in enumerate(out.stats.steps_per_sample.tolist()):
            end = int(ends[i])
            text = self.tokenizer.decode(tokens[i, :end].tolist(), skip_special_tokens=True)
            mesh, report = parse_obj(text, self.bins)
            report.ended = end < tokens.shape[1]
            steps_to_end = int(accept[i, min(end, tokens.shape[1] - 1)]) + 1
            texts.append(text)
            meshes.append(mesh)
            reports.append(report)
            n = tokens.shape[1]
            stats.append(mesh_stats(method, seeds[i], n, steps, min(end + 1, n), steps_to_end, report))
        return LlamaMeshOutput(texts, meshes, reports, tokens, stats)
