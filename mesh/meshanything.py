"""MeshAnything V2 (Chen et al. 2024, "MeshAnything V2: Artist-Created Mesh Generation With Adjacent Mesh
Tokenization"), following the official code (github.com/buaacyw/MeshAnythingV2, ``MeshAnything/models``).

A point cloud with normals goes through the Michelangelo shape encoder (:mod:`.michelangelo`); its 257 features
become the decoder's prefix (``cond_head_proj`` for the shape embedding, ``cond_proj`` for each latent beside its
VAE-decoded latent). The decoder, ``ShapeOPT``, is transformers' ``OPTForCausalLM`` with two tables more:

- ``model.decoder.cond_embed`` (2 x D), added to prefix positions (row 0) and token positions (row 1);
- ``model.decoder.token_embed_positions`` (10 x D), a role per token, which the official ``OPTLoopEmbedding``
  computes with a stateful per-sample recurrence while generating one token at a time. The role depends only on
  the tokens since the last separator or special token, so :func:`amt_roles` computes it from the token history
  of a :class:`~mmaccel.mesh.grammar.TokenHistoryCache`, for a whole verify window (or a tree) at once.

Tokens: 0 bos, 1 eos, 2 pad, ``3 + b`` coordinate bin ``b`` of 128, 131 the separator of the adjacent mesh
tokenisation (AMT). The first face after bos or a separator is 9 coordinates; each further coordinate triple is a
new vertex that makes a face with the last two vertices written (a triangle strip), until the next separator.
As in the official ``generate``, bos is the model's first generated token (the prompt is the prefix alone).

Departures from the official inference, on purpose: float32 on CPU (the official runs fp16 under autocast with
flash-attention 2, which is why its stock OPT could not verify drafts); the detokeniser drops an empty sequence
instead of emitting the official placeholder triangle, and stops at a malformed separator as the official one
does.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from torch import nn
from transformers import OPTConfig, OPTForCausalLM

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict
from mmaccel.methods import build_decoder, parse_method
from mmaccel.models import ModelOutput
from mmaccel.models.base import gather_last
from mmaccel.models.hf import slot_forward
from mmaccel.sampling import SamplingConfig

from .grammar import TokenHistoryCache
from .michelangelo import MichelangeloPointEncoder, PointEncoderConfig
from .stats import mesh_stats
from .tokenizer import DecodeReport, clean_mesh

BOS, EOS, PAD = 0, 1, 2
#: Coordinate bins, the first coordinate token id, and the AMT separator's id.
BINS, COORD, SEPARATOR = 128, 3, 131
#: The official sampling settings (``sampling=True``: top-k 50, top-p 0.95, temperature 1).
DEFAULT_TOP_K, DEFAULT_TOP_P = 50, 0.95
POINTS = 8192


class ShapeOPTConfig(OPTConfig):
    """``OPTConfig`` plus the three fields MeshAnything V2 sets on it."""

    model_type = "shape_opt"

    def __init__(self, n_discrete_size: int = BINS, face_per_token: int = 9, cond_length: int = 257, **kwargs):
        self.n_discrete_size = n_discrete_size
        self.face_per_token = face_per_token
        self.cond_length = cond_length
        super().__init__(**kwargs)


def official_decoder_config() -> ShapeOPTConfig:
    """The decoder of the released checkpoint: ``facebook/opt-350m``'s config as MeshAnything V2 edits it (no
    download: opt-350m's values are written out here)."""
    cond_length, max_triangles, ratio = 257, 1600, 0.70
    max_length = int(max_triangles * 9 * ratio + 3 + cond_length)
    return ShapeOPTConfig(
        vocab_size=BINS + 4,
        hidden_size=1024,
        num_hidden_layers=24,
        ffn_dim=4096,
        num_attention_heads=16,
        max_position_embeddings=max_length,
        word_embed_proj_dim=1024,  # opt-350m's 512, set to hidden_size by MeshAnything V2 (no projections)
        do_layer_norm_before=False,  # opt-350m is post-LN, so there is no final layer norm either
        activation_function="relu",
        dropout=0.1,
        attention_dropout=0.0,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        cond_length=cond_length,
    )


class ShapeOPT(OPTForCausalLM):
    """MeshAnything V2's decoder: ``OPTForCausalLM`` with the ``cond_embed`` and ``token_embed_positions`` tables
    under their official names. ``input_ids`` need their AMT roles (``face_ids``, :func:`amt_roles`);
    ``inputs_embeds`` are the condition prefix."""

    config_class = ShapeOPTConfig

    def __init__(self, config: ShapeOPTConfig):
        super().__init__(config)
        decoder = self.model.decoder
        decoder.token_embed_positions = nn.Embedding(10, config.word_embed_proj_dim)
        decoder.cond_embed = nn.Embedding(2, config.word_embed_proj_dim)
        self.post_init()

    def forward(self, input_ids=None, face_ids=None, inputs_embeds=None, cache=None, **kwargs):
        decoder = self.model.decoder
        if input_ids is not None:
            if face_ids is None:
                raise ValueError("ShapeOPT needs face_ids (the AMT roles of input_ids, see amt_roles)")
            embeds = decoder.embed_tokens(input_ids) + decoder.token_embed_positions(face_ids)
            inputs_embeds = embeds + decoder.cond_embed.weight[1]
        else:
            inputs_embeds = inputs_embeds + decoder.cond_embed.weight[0]
        return super().forward(inputs_embeds=inputs_embeds, cache=cache, **kwargs)


def amt_roles(history: torch.Tensor, start: int) -> torch.Tensor:
    """The official ``OPTLoopEmbedding`` roles of a token history ``[..., S]`` whose tokens begin at ``start``.

    Special tokens (bos, eos, pad) keep their id as role, the separator is role 3, and coordinate ``k`` since the
    last special token or separator is ``4 + k % 3`` for the first face's 9 and ``7 + k % 3`` after them.
    Positions before ``start`` (the condition prefix) count as resets.
    """
    span = torch.arange(history.shape[-1], device=history.device)
    reset = (history < COORD) | (history == SEPARATOR) | (span < start)
    last = torch.where(reset, span, -1).cummax(-1).values
    k = span - last - 1
    coordinate = torch.where(k < 9, 4 + k % 3, 7 + k % 3)
    return torch.where(reset, torch.where(history < COORD, history, 3), coordinate).clamp(min=0)


@dataclass
class MeshAnythingConfig:
    """The sizes of a MeshAnything V2 folder (``config.json``); an empty or absent file means the released model."""

    decoder: dict = field(default_factory=dict)  # ShapeOPTConfig fields over :func:`official_decoder_config`
    point_encoder: dict = field(default_factory=dict)  # PointEncoderConfig fields over its defaults

    def decoder_config(self) -> ShapeOPTConfig:
        config = official_decoder_config()
        for key, value in self.decoder.items():
            if not hasattr(config, key):
                raise ValueError(f"config.json: decoder field {key!r} is not an OPT / ShapeOPT config field")
            setattr(config, key, value)
        return config

    def encoder_config(self) -> PointEncoderConfig:
        return PointEncoderConfig(**self.point_encoder)


class MeshAnythingV2(nn.Module):
    """The released module's layout (``point_encoder``, ``transformer``, ``cond_head_proj``, ``cond_proj``), so its
    ``model.safetensors`` loads unchanged."""

    def __init__(self, config: MeshAnythingConfig | None = None):
        super().__init__()
        self.config = config or MeshAnythingConfig()
        decoder = self.config.decoder_config()
        encoder = self.config.encoder_config()
        self.point_encoder = MichelangeloPointEncoder(encoder)
        self.transformer = ShapeOPT(decoder)
        self.cond_head_proj = nn.Linear(encoder.width, decoder.word_embed_proj_dim)
        self.cond_proj = nn.Linear(encoder.width * 2, decoder.word_embed_proj_dim)
        self.cond_length = decoder.cond_length
        if encoder.num_latents + 1 != self.cond_length:
            raise ValueError(f"cond_length {self.cond_length} must be the encoder's num_latents + 1")

    @torch.no_grad()
    def condition(self, pc_normal: torch.Tensor) -> torch.Tensor:
        """``[B, N, 6]`` normalised points and normals to the decoder's prefix ``[B, cond_length, D]`` (the
        official ``process_point_feature`` of ``encode_latents``)."""
        feature = self.point_encoder.encode_latents(pc_normal)
        head = self.cond_head_proj(feature[:, :1])
        latents = feature[:, 1:]
        shape = self.point_encoder.to_shape_latents(latents)
        return torch.cat([head, self.cond_proj(torch.cat([latents, shape], dim=-1))], dim=1)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> MeshAnythingV2:
        """Load a folder holding ``model.safetensors`` (the released file, or one this class saved) and an
        optional ``config.json`` of :class:`MeshAnythingConfig` fields."""
        folder = Path(path)
        weights = folder / "model.safetensors"
        if not folder.is_dir():
            raise CheckpointError(f"MeshAnything V2 folder {str(folder)!r} does not exist")
        if not weights.is_file():
            raise CheckpointError(f"MeshAnything V2 folder {str(folder)!r} has no model.safetensors")
        config = MeshAnythingConfig()
        if (folder / "config.json").is_file():
            try:
                raw = json.loads((folder / "config.json").read_text())
                config = MeshAnythingConfig(**{k: raw[k] for k in ("decoder", "point_encoder") if k in raw})
            except (ValueError, TypeError) as err:
                raise CheckpointError(
                    f"{str(folder / 'config.json')!r} is not a MeshAnything V2 config: {err}"
                ) from err
        model = cls(config)
        state = read_state_dict(weights)
        if model.transformer.config.tie_word_embeddings:
            # The LM head is tied to the token embeddings (OPT's default); safetensors stores a shared tensor under
            # one of its names.
            pair = ("transformer.lm_head.weight", "transformer.model.decoder.embed_tokens.weight")
            for name, other in (pair, pair[::-1]):
                if name not in state and other in state:
                    state[name] = state[other]
        load_checked(model, state, str(weights))
        model.transformer.tie_weights()
        return model.to(device).eval()

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``model.safetensors`` and ``config.json`` (for tiny test models; the released folder loads as is)."""
        from safetensors.torch import save_model

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_model(self, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(asdict(self.config), indent=1))


@dataclass
class PointPrompt:
    """The decoder's condition prefix ``[B, cond_length, D]`` (from :meth:`MeshAnythingV2.condition`)."""

    embeddings: torch.Tensor

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 3:
            raise ValueError(f"point prompt must be [batch, tokens, dim], got {tuple(self.embeddings.shape)}")
        b, n = self.embeddings.shape[:2]
        self.lengths = torch.full((b,), n, dtype=torch.long, device=self.embeddings.device)

    @property
    def batch_size(self) -> int:
        return self.embeddings.shape[0]

    def cat(self, other: PointPrompt) -> PointPrompt:
        return PointPrompt(torch.cat([self.embeddings, other.embeddings.to(self.embeddings.device)]))

    def to(self, device: torch.device | str) -> PointPrompt:
        return PointPrompt(self.embeddings.to(device))


class MeshAnythingLM:
    """:class:`MeshAnythingV2`'s decoder behind the engine's :class:`~mmaccel.models.TokenModel` contract.

    Every forward records its tokens in the :class:`TokenHistoryCache` and embeds them with their AMT roles
    (:func:`amt_roles`), each tree node with its own path's history; so drafts of any method get the roles the
    official recurrence would give them once committed.
    """

    def __init__(self, model: MeshAnythingV2):
        self.model = model.eval()
        self.decoder = model.transformer
        self.cond_length = model.cond_length
        self.vocab_size = int(self.decoder.config.vocab_size)

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.dtype

    def new_cache(self, batch_size: int, max_length: int) -> TokenHistoryCache:
        return TokenHistoryCache(max_length)

    def embedding_table(self) -> torch.Tensor:
        return self.decoder.get_input_embeddings().weight.detach()

    def _roles(self, tokens: torch.Tensor, positions: torch.Tensor, cache: TokenHistoryCache) -> torch.Tensor:
        histories = cache.record_forward(tokens, positions)  # [B, S], or each tree node's own [B, T, S]
        roles = amt_roles(histories, self.cond_length)
        return roles.gather(1, positions) if roles.dim() == 2 else roles.gather(2, positions[..., None]).squeeze(-1)

    def _output(self, out, output_hidden: bool) -> ModelOutput:
        return ModelOutput(out.logits.float(), out.hidden_states[-1] if output_hidden else None)

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: TokenHistoryCache, output_hidden: bool = False
    ) -> ModelOutput:
        roles = self._roles(tokens, positions, cache)
        out = slot_forward(
            self.decoder, positions, cache, input_ids=tokens, face_ids=roles, output_hidden_states=output_hidden
        )
        return self._output(out, output_hidden)

    @torch.no_grad()
    def prefill(self, prompt: PointPrompt, cache: TokenHistoryCache, output_hidden: bool = False) -> ModelOutput:
        embeds = prompt.embeddings.to(self.device, self.dtype)
        if embeds.shape[1] != self.cond_length or embeds.shape[2] != self.decoder.config.word_embed_proj_dim:
            raise ValueError(
                f"point prompt must be [batch, {self.cond_length}, {self.decoder.config.word_embed_proj_dim}], "
                f"got {tuple(embeds.shape)}"
            )
        positions = torch.arange(embeds.shape[1], device=self.device).expand(embeds.shape[0], -1)
        cache.record(torch.full_like(positions, PAD), positions)  # prefix slots: resets for amt_roles
        out = slot_forward(self.decoder, positions, cache, inputs_embeds=embeds, output_hidden_states=output_hidden)
        out = self._output(out, output_hidden)
        hidden = gather_last(out.hidden, prompt.lengths) if output_hidden else None
        return ModelOutput(out.logits[:, -1:], hidden)


def amt_decode(tokens: torch.Tensor | np.ndarray) -> tuple[trimesh.Trimesh, DecodeReport]:
    """Generated token ids (bos first or not) to a mesh and a :class:`~mmaccel.mesh.tokenizer.DecodeReport`, as
    the official ``adjacent_detokenize``: reading stops at eos or pad, at a separator that does not end a whole
    face, or at a second bos; never raises. Coordinates map to ``bin / 128 - 0.5`` in the token order (x, y, z)."""
    t = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int64).reshape(-1)
    if len(t) and t[0] == BOS:
        t = t[1:]
    report = DecodeReport()
    special = np.flatnonzero(t < COORD)
    if len(special):
        report.ended = bool(t[special[0]] == EOS)
        report.bad_tokens = int(t[special[0]] != EOS)
        t = t[: special[0]]
    report.bad_tokens += int((t > SEPARATOR).sum())
    t = t[: np.flatnonzero(t > SEPARATOR)[0]] if (t > SEPARATOR).any() else t
    # Split into strips at separators; a strip must be one 9-coordinate face plus whole vertices.
    cuts = np.flatnonzero(t == SEPARATOR)
    strips = np.split(t, cuts)
    corners, read = [], 0
    for i, strip in enumerate(strips):
        coords = strip[1:] if i else strip  # every strip but the first starts with its separator
        whole = len(coords) >= 9 and len(coords) % 3 == 0
        last = i == len(strips) - 1
        n = len(coords) // 3 * 3
        v = (coords[:n].reshape(-1, 3) - COORD) / BINS - 0.5
        if len(v) >= 3:  # a strip's complete faces count even where a malformed separator ends it
            idx = np.arange(len(v) - 2)
            corners.append(np.stack([v[idx], v[idx + 1], v[idx + 2]], 1))
            read += len(idx)
        if not whole and not last:
            report.errors.append(f"separator after {len(coords)} coordinates of a strip: reading stopped")
            break
        report.trailing_tokens = len(coords) - n if last else 0
    report.faces_read = read
    faces = np.concatenate(corners) if corners else np.zeros((0, 3, 3))
    mesh = clean_mesh(faces, report)
    if len(mesh.faces):
        # A strip alternates its faces' winding; the official post-processing orients them (fix_normals).
        mesh.fix_normals()
        report.manifold = bool(report.watertight and mesh.is_winding_consistent)
        report.valid = report.watertight and report.manifold
    return mesh, report


def amt_encode(mesh: trimesh.Trimesh) -> np.ndarray:
    """A mesh to AMT token ids (no bos or eos), as the official ``mesh_sort`` and ``adjacent_mesh_tokenization``:
    normalised into ``[-0.5, 0.5]`` by its bounding box, quantised to 128 bins, vertices sorted z-y-x, faces by
    their sorted vertex indices; each strip goes on through the face that shares the last two vertices written
    and has the smallest third vertex, and a separator starts the next strip at the first face left."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    if len(mesh.faces) == 0:
        raise ValueError("mesh has no faces")
    lo, hi = v.min(0), v.max(0)
    v = np.clip((v - (lo + hi) / 2) / max(float((hi - lo).max()), 1e-12), -0.5, 0.5)
    q = np.clip(np.round((v + 0.5) * BINS - 0.5), 0, BINS - 1).astype(np.int64)
    clean = trimesh.Trimesh(q, np.asarray(mesh.faces), process=False)
    clean.merge_vertices()
    clean.update_faces(clean.nondegenerate_faces())
    clean.update_faces(clean.unique_faces())
    clean.remove_unreferenced_vertices()
    order = np.lexsort(np.asarray(clean.vertices).T)
    verts = np.asarray(clean.vertices, dtype=np.int64)[order]
    faces = np.sort(np.argsort(order)[np.asarray(clean.faces)], axis=1)
    faces = faces[np.lexsort(faces.T[::-1])]
    by_edge: dict[tuple[int, int], list[int]] = {}
    for i, (a, b, c) in enumerate(faces.tolist()):
        for e in ((a, b), (a, c), (b, c)):
            by_edge.setdefault(e, []).append(i)
    left = np.ones(len(faces), dtype=bool)
    sequence: list[int] = []
    while left.any():
        first = int(np.flatnonzero(left)[0])
        left[first] = False
        if sequence:
            sequence.append(-1)
        sequence += faces[first].tolist()
        while True:
            a, b = sequence[-2], sequence[-1]
            options = [i for i in by_edge.get((min(a, b), max(a, b)), []) if left[i]]
            if not options:
                break
            third = [int(next(x for x in faces[i] if x not in (a, b))) for i in options]
            pick = options[int(np.argmin(third))]
            left[pick] = False
            sequence.append(min(third))
    out = [[SEPARATOR] if i < 0 else (verts[i] + COORD).tolist() for i in sequence]
    return np.asarray([t for part in out for t in part], dtype=np.int64)


def point_cloud(mesh: trimesh.Trimesh, points: int = POINTS, seed: int = 0) -> np.ndarray:
    """``[points, 6]`` surface samples and face normals of ``mesh``, normalised as the official ``Dataset`` does
    (bounding-box centre at the origin, largest absolute coordinate 0.9995). A mesh without faces is refused."""
    if len(mesh.faces) == 0:
        raise ValueError("the conditioning mesh has no faces")
    xyz, face = trimesh.sample.sample_surface(mesh, points, seed=seed)
    normals = np.asarray(mesh.face_normals)[face]
    lo, hi = xyz.min(0), xyz.max(0)
    xyz = xyz - (lo + hi) / 2
    xyz = xyz / max(float(np.abs(xyz).max()), 1e-12) * 0.9995
    return np.concatenate([xyz, normals], axis=1).astype(np.float32)


class StripInit:
    """Jacobi initialisation ``init(context [B, N], index [B, K], uniforms [B, K]) -> tokens [B, K]`` for AMT: a new
    window position copies the token one vertex (3 tokens) back, following the copy back past the window's start.
    Along a strip each new vertex is written after the two it joins, and z-y-x sorted neighbours often repeat a
    coordinate. Positions with nothing 3 back get uniformly random coordinate tokens."""

    def __call__(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        start = index[:, :1]
        src = index - ((index - start) // 3 + 1) * 3  # in [start - 3, start): committed context
        copied = context.gather(1, src.clamp(min=0))
        random = COORD + (uniforms * BINS).long().clamp_(max=BINS - 1)
        return torch.where(src >= 0, copied, random)


def default_conditions(count: int) -> list[trimesh.Trimesh]:
    """Meshes to remesh when a bench names none: trimesh primitives in turn (box, sphere, cylinder, cone, torus)."""
    shapes = (
        trimesh.creation.box((1.0, 0.6, 0.4)),
        trimesh.creation.icosphere(2),
        trimesh.creation.cylinder(0.4, 1.0, sections=24),
        trimesh.creation.cone(0.5, 1.0, sections=24),
        trimesh.creation.torus(1.0, 0.3, 24, 12),
    )
    return [shapes[i % len(shapes)] for i in range(count)]


class MeshAnythingFamily:
    """MeshAnything V2 in the shape of :func:`mmaccel.bench.family.run_family_bench`: conditions are meshes, each
    generation runs ``max_new_tokens`` tokens, and there is no guidance (the official sampler has none)."""

    name = "meshanything"

    def __init__(self, pipe: MeshAnythingPipeline, max_new_tokens: int):
        self.pipe, self.max_new_tokens = pipe, int(max_new_tokens)

    def prompt(self, conditions: list[trimesh.Trimesh]) -> PointPrompt:
        return self.pipe.prompt(conditions)

    def num_tokens(self, prompt: PointPrompt) -> int:
        return self.max_new_tokens

    def timing_prompt(self, batch: int) -> PointPrompt:
        return self.prompt(default_conditions(1) * batch)

    def guided_model(self, guidance_scale: float) -> MeshAnythingLM:
        if guidance_scale != 1.0:
            raise ValueError("--guidance-scale: MeshAnything V2 has no unconditional prompt; use 1")
        return self.pipe.lm

    def decoder(self, name: str, params: dict, sampling: SamplingConfig, guidance_scale: float, prompt: PointPrompt):
        self.guided_model(guidance_scale)
        return build_decoder(self.pipe.lm, name, params, sampling=sampling, inits={"strip": StripInit})


@dataclass
class MeshAnythingOutput:
    """Meshes, their reports, the generated tokens (bos first) and per-mesh stats."""

    meshes: list[trimesh.Trimesh]
    reports: list[DecodeReport]
    tokens: torch.Tensor
    stats: list[dict[str, Any]] = field(default_factory=list)


class MeshAnythingPipeline:
    """MeshAnything V2 from a local folder, generating with plain AR or any method of the core's table.

    >>> pipe = MeshAnythingPipeline.from_pretrained("/models/MeshAnythingV2")
    >>> out = pipe([trimesh.load("chair.obj")], method="sjd:init=strip")
    >>> out.meshes[0].export("chair_artist.obj")
    """

    def __init__(self, model: MeshAnythingV2):
        self.model = model
        self.lm = MeshAnythingLM(model)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> MeshAnythingPipeline:
        return cls(MeshAnythingV2.from_pretrained(path, device))

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def max_new_tokens(self) -> int:
        return int(self.lm.decoder.config.max_position_embeddings) - self.lm.cond_length

    def prompt(self, inputs: list[trimesh.Trimesh] | torch.Tensor, seed: int = 0) -> PointPrompt:
        """Meshes (sampled with :func:`point_cloud`, mesh ``i`` with seed ``seed + i``) or a ready ``[B, N, 6]``
        tensor of normalised points and normals, to the decoder's prefix."""
        if isinstance(inputs, torch.Tensor):
            pc = inputs
        else:
            pc = torch.from_numpy(np.stack([point_cloud(m, seed=seed + i) for i, m in enumerate(inputs)]))
        if pc.dim() != 3 or pc.shape[-1] != 6:
            raise ValueError(f"point clouds must be [batch, points, 6] (xyz and normal), got {tuple(pc.shape)}")
        return PointPrompt(self.model.condition(pc.to(self.device, self.lm.dtype)))

    @torch.no_grad()
    def __call__(
        self,
        inputs: list[trimesh.Trimesh] | torch.Tensor,
        method: str = "ar",
        max_new_tokens: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = DEFAULT_TOP_K,
        top_p: float | None = DEFAULT_TOP_P,
        seed: int = 0,
        progress: bool = True,
        **method_params: Any,
    ) -> MeshAnythingOutput:
        """One mesh per input; row ``i`` samples with seed ``seed + i``. ``temperature=0`` is the official greedy
        mode (``sampling=False``); the defaults are its ``sampling=True`` settings."""
        name, params = parse_method(method, "method")
        params.update(method_params)
        limit = self.max_new_tokens()
        max_new_tokens = limit if max_new_tokens is None else int(max_new_tokens)
        if not 0 < max_new_tokens <= limit:
            raise ValueError(f"max_new_tokens must be in 1..{limit} (the decoder's context after the prefix)")
        prompt = self.prompt(inputs, seed)
        sampling = SamplingConfig(temperature, top_k, top_p)
        decoder = build_decoder(self.lm, name, params, sampling=sampling, inits={"strip": StripInit})
        seeds = [seed + i for i in range(prompt.batch_size)]
        out = decoder.generate(prompt, max_new_tokens, seeds=seeds, progress=progress)
        tokens, accept = out.tokens.cpu(), out.stats.accept_step.cpu()
        meshes, reports, stats = [], [], []
        for i, steps in enumerate(out.stats.steps_per_sample.tolist()):
            row = tokens[i]
            ends = torch.nonzero(row[1:] == EOS)
            end = int(ends[0]) + 1 if len(ends) else len(row) - 1
            mesh, report = amt_decode(row[: end + 1])
            steps_to_end = int(accept[i, end]) + 1
            meshes.append(mesh)
            reports.append(report)
            stats.append(mesh_stats(method, seeds[i], len(row), steps, end + 1, steps_to_end, report))
        return MeshAnythingOutput(meshes, reports, tokens, stats)
