"""AR mesh generation with any acceleration method, in diffusers' pipeline conventions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from diffusers.utils import BaseOutput

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict
from mmaccel.methods import TokenTables
from mmaccel.models import TokenPrompt
from mmaccel.sampling import SamplingConfig

from .data import CLASS_NAMES
from .grammar import mesh_target
from .methods import build_mesh_decoder, check_mesh_params, heads_from
from .model import WEIGHTS_DIR, MeshGPT, load_mesh_gpt
from .stats import mesh_stats
from .tokenizer import TOKENS_PER_FACE, DecodeReport, decode, encode

#: Sampling settings of the default model (CLI, bench and model card use them). On 18 AR meshes of the default
#: model (seeds 0-17) temperature 0.7 with guidance 1.5 gave the best class accuracy (0.67; 0.50 at temperature 1,
#: 0.28 at guidance 3). Validity barely follows the temperature (the session-15 GPT on 72 meshes: 0.47 at 0.7,
#: 0.49 at 0.4, 0.60 at 0.15 with coverage down by a third): see mesh/weights/README.md. The
#: structure mask (mmaccel.mesh.grammar) is on: it removes out-of-order and degenerate faces, for AR and every method.
DEFAULTS = {"guidance_scale": 1.5, "temperature": 0.7, "top_k": None, "top_p": None, "structure_mask": True}
DEFAULT_METHOD = "xspec"


@dataclass
class MeshPipelineOutput(BaseOutput):
    """Generated meshes, their decode reports, the raw tokens, per-face acceptance and per-mesh statistics.

    ``face_steps[i][f]`` is the forward that accepted the last token of face ``f`` of mesh ``i`` (0: the prompt's).
    """

    meshes: list[trimesh.Trimesh]
    reports: list[DecodeReport]
    tokens: torch.Tensor
    face_steps: list[np.ndarray]
    stats: list[dict[str, Any]] = field(default_factory=list)


def end_index(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """``[B]`` index of each row's first ``eos`` (the row length when there is none)."""
    hit = tokens == eos
    return torch.where(hit.any(1), hit.int().argmax(1), tokens.shape[1])


class MeshARPipeline:
    """The mesh GPT (:mod:`mmaccel.mesh.model`) with its draft heads, generating with plain AR sampling, any
    method of the core's table, or ``xspec`` (:mod:`mmaccel.mesh.methods`).

    >>> pipe = MeshARPipeline.from_pretrained()            # the shipped default model
    >>> out = pipe(class_labels="cone", method="xspec", seed=0)
    >>> out.meshes[0].export("cone.obj")
    """

    def __init__(self, model: MeshGPT, heads=None, cache_dir: str | os.PathLike | None = None):
        self.model = model
        self.heads = heads
        self.cache_dir = cache_dir
        self.class_names = CLASS_NAMES if model.vocab.num_classes == len(CLASS_NAMES) else ()

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
    ) -> MeshARPipeline:
        """Load ``gpt.safetensors`` (and ``heads.safetensors`` when present) from a folder (default: shipped)."""
        folder = Path(path) if path is not None else WEIGHTS_DIR
        if not folder.is_dir():
            raise CheckpointError(f"mesh model folder not found: {str(folder)!r}")
        model = load_mesh_gpt(folder / "gpt.safetensors", device)
        heads = None
        heads_path = folder / "heads.safetensors"
        if heads_path.exists():
            state = read_state_dict(heads_path)
            try:
                heads = heads_from(state, model.hidden_size, model.vocab_size)
            except (ValueError, IndexError) as err:
                raise CheckpointError(f"{str(heads_path)!r} holds no draft heads: {err}") from err
            load_checked(heads, state, str(heads_path))
            heads = heads.to(device).eval()
        return cls(model, heads, folder)

    def to(self, device: str | torch.device) -> MeshARPipeline:
        self.model.to(device)
        if self.heads is not None:
            self.heads.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def vocab(self):
        return self.model.vocab

    def class_label(self, value: int | str) -> int:
        """A class index, or a class name of the default model; refusals name the classes."""
        if isinstance(value, str):
            if value not in self.class_names:
                known = f"one of {', '.join(self.class_names)} or " if self.class_names else ""
                raise ValueError(f"unknown class {value!r}; give {known}an index in [0, {self.vocab.num_classes})")
            return self.class_names.index(value)
        if isinstance(value, bool) or not 0 <= int(value) < self.vocab.num_classes:
            raise ValueError(f"class must be in [0, {self.vocab.num_classes}), got {value!r}")
        return int(value)

    def prompt(self, labels: list[int], prefixes: list[trimesh.Trimesh | None] | None = None) -> TokenPrompt:
        """``[class, bos, prefix faces...]`` rows; a prefix mesh's faces (sorted layout) start its sequence."""
        rows = []
        for i, label in enumerate(labels):
            row = [int(self.vocab.class_token(label)), self.vocab.bos]
            if prefixes is not None and prefixes[i] is not None:
                row += encode(prefixes[i], self.vocab.levels).tolist()
            rows.append(row)
        return TokenPrompt.from_lists(rows, pad_id=self.vocab.eos).to(self.device)

    def check_faces(self, max_faces: int | None, prompt_faces: int = 0) -> int:
        budget = self.model.max_faces if max_faces is None else max_faces
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"max_faces must be an integer >= 1, got {max_faces!r}")
        if budget + prompt_faces > self.model.max_faces:
            raise ValueError(
                f"max_faces {budget} (+ {prompt_faces} prefix faces) exceeds the model's context of "
                f"{self.model.max_faces} faces"
            )
        return budget

    def build_decoder(
        self, method: str, sampling: SamplingConfig, guidance_scale: float, structure_mask: bool = False, **params: Any
    ):
        """The decoder of ``method``; with ``structure_mask`` its target (AR's too) is the model masked to the
        layout's grammar and sort order (:mod:`mmaccel.mesh.grammar`)."""
        tables = TokenTables({"embeddings": self.model.embedding_table}, self.cache_dir)
        target = mesh_target(self.model, structure_mask)  # build_mesh_decoder adds the guidance
        return build_mesh_decoder(
            target,
            method,
            params,
            heads=self.heads,
            sampling=sampling,
            guidance_scale=guidance_scale,
            levels=self.vocab.levels,
            eos=self.vocab.eos,
            tables=tables,
        )

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str],
        method: str | None = None,
        num_meshes: int | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        max_faces: int | None = None,
        prefix: trimesh.Trimesh | list[trimesh.Trimesh | None] | None = None,
        seed: int = 0,
        progress: bool = True,
        structure_mask: bool | None = None,
        **method_params: Any,
    ) -> MeshPipelineOutput:
        """Generate ``num_meshes`` meshes (default: one per class label; a single label is repeated).

        Mesh ``i`` uses seed ``seed + i``. ``max_faces`` is the face budget (default: the model's context);
        ``prefix`` meshes are completed (their faces, sorted, are the start of the sequence). The sequence after
        each mesh's ``eos`` is generated too (the engine runs a fixed length) and counted apart in the stats:
        ``steps_to_end`` is the forwards until the ``eos`` was committed. ``structure_mask`` (default on) masks
        the model to the layout's grammar and sort order, for AR and every method alike.
        """
        method = DEFAULT_METHOD if method is None else method
        params = check_mesh_params(method, method_params)
        labels = [class_labels] if isinstance(class_labels, (int, str)) else list(class_labels)
        if not labels:
            raise ValueError("class_labels must not be empty")
        if num_meshes is not None:
            if num_meshes < 1:
                raise ValueError(f"num_meshes must be >= 1, got {num_meshes}")
            if len(labels) == 1:
                labels = labels * num_meshes
            elif len(labels) != num_meshes:
                raise ValueError(f"num_meshes ({num_meshes}) differs from the number of class labels ({len(labels)})")
        labels = [self.class_label(c) for c in labels]
        prefixes = [prefix] * len(labels) if isinstance(prefix, trimesh.Trimesh) else prefix
        if prefixes is not None and len(prefixes) != len(labels):
            raise ValueError(f"prefix holds {len(prefixes)} meshes for {len(labels)} class labels")
        prompt = self.prompt(labels, prefixes)
        prompt_faces = (int(prompt.lengths.max()) - 2) // TOKENS_PER_FACE
        budget = self.check_faces(max_faces, prompt_faces)
        guidance_scale = DEFAULTS["guidance_scale"] if guidance_scale is None else guidance_scale
        temperature = DEFAULTS["temperature"] if temperature is None else temperature
        sampling = SamplingConfig(temperature, top_k, top_p)
        structure_mask = DEFAULTS["structure_mask"] if structure_mask is None else bool(structure_mask)
        decoder = self.build_decoder(method, sampling, guidance_scale, structure_mask, **params)
        n = budget * TOKENS_PER_FACE + 1
        seeds = [seed + i for i in range(len(labels))]
        out = decoder.generate(prompt, n, seeds=seeds, progress=progress)
        tokens, accept = out.tokens.cpu(), out.stats.accept_step.cpu()
        ends = end_index(tokens, self.vocab.eos)
        meshes, reports, face_steps, stats = [], [], [], []
        for i, steps in enumerate(out.stats.steps_per_sample.tolist()):
            mesh, report = decode(tokens[i], self.vocab)
            end = int(ends[i])
            # The forward that committed the eos (or the last token) ends the mesh; forward 0 is the prompt's.
            steps_to_end = int(accept[i, min(end, n - 1)]) + 1
            faces = min(end, n) // TOKENS_PER_FACE
            per_face = accept[i, : faces * TOKENS_PER_FACE].view(faces, TOKENS_PER_FACE).max(1).values.numpy()
            meshes.append(mesh)
            reports.append(report)
            face_steps.append(per_face)
            stats.append(
                mesh_stats(
                    method,
                    seeds[i],
                    n,
                    steps,
                    min(end + 1, n),
                    steps_to_end,
                    report,
                    **{"class": CLASS_NAMES[labels[i]] if self.class_names else labels[i]},
                    structure_mask=structure_mask,
                    ar_steps=n,
                    batch_nfe=out.stats.nfe,
                    batch_wall_s=out.stats.wall_s,
                )
            )
        return MeshPipelineOutput(meshes, reports, tokens, face_steps, stats)
