"""Mesh <-> token sequences in the MeshGPT / MeshAnything layout.

Siddiqui et al. 2024 ("MeshGPT") and Chen et al. 2024 ("MeshAnything"): a mesh is normalised into a unit
cube, its coordinates are quantised (here to 7 bits, 128 levels), vertices are sorted z-y-x (z, the vertical
axis, most significant), each face's vertex list is rotated so its lowest vertex comes first, and faces are
sorted by their vertex indices. A face is then 9 tokens: ``z y x`` of each of its three vertices.

Vocabulary (:class:`MeshVocab`): coordinate levels ``0 .. levels-1``, then ``bos``, ``eos``, one token per class
and the null class (classifier-free guidance). A class-conditional sequence is
``[class, bos, face tokens ..., eos, eos, ...]``: after the end every position holds ``eos``, so a decoder that
generates a fixed number of tokens writes ``eos`` there.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh

from mmaccel.io import write_atomic

TOKENS_PER_FACE = 9
#: File formats trimesh writes that :func:`write_mesh` accepts, by suffix.
MESH_FORMATS = {".obj": "obj", ".ply": "ply", ".glb": "glb"}


@dataclass(frozen=True)
class MeshVocab:
    """Token ids of a mesh model: ``levels`` coordinate bins, ``bos``, ``eos``, ``num_classes`` classes, null."""

    levels: int = 128
    num_classes: int = 9

    @property
    def bos(self) -> int:
        return self.levels

    @property
    def eos(self) -> int:
        return self.levels + 1

    def class_token(self, label: int | torch.Tensor) -> int | torch.Tensor:
        return self.levels + 2 + label

    @property
    def null_class(self) -> int:
        return self.levels + 2 + self.num_classes

    @property
    def size(self) -> int:
        return self.levels + 3 + self.num_classes


def normalise(vertices: np.ndarray) -> np.ndarray:
    """Centre the bounding box at the origin and scale its longest side to 1 (coordinates in [-0.5, 0.5])."""
    lo, hi = vertices.min(0), vertices.max(0)
    extent = float((hi - lo).max())
    if extent <= 0:
        raise ValueError("mesh has zero extent (all vertices coincide)")
    return (vertices - (lo + hi) / 2) / extent


def quantise(vertices: np.ndarray, levels: int = 128) -> np.ndarray:
    """Coordinates in [-0.5, 0.5] to integer bins ``0 .. levels - 1``."""
    return np.clip(np.rint((vertices + 0.5) * (levels - 1)), 0, levels - 1).astype(np.int64)


def dequantise(bins: np.ndarray, levels: int = 128) -> np.ndarray:
    return bins.astype(np.float64) / (levels - 1) - 0.5


def canonical_faces(bins: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Quantised vertices [N, 3] (x y z) and faces [F, 3] to the sorted face list as coordinates [F, 3, 3] (z y x).

    Vertices that quantise to the same bin merge; faces that become degenerate (two equal corners) or repeat
    are dropped. Vertices are ranked z-y-x, each face is rotated (keeping its winding) to start at its lowest
    vertex, and faces are sorted by their three vertex ranks.
    """
    zyx = bins[:, ::-1]
    unique, inverse = np.unique(zyx, axis=0, return_inverse=True)  # lexicographic: z, then y, then x
    f = inverse.reshape(-1)[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    shift = f.argmin(1)
    f = np.take_along_axis(f, (shift[:, None] + np.arange(3)) % 3, 1)
    f = np.unique(f, axis=0)  # sorted by (first, second, third) vertex rank; duplicates dropped
    return unique[f]


def encode(mesh: trimesh.Trimesh, levels: int = 128, normalised: bool = False) -> np.ndarray:
    """The face tokens of ``mesh`` (without bos/eos), ``[9 * F]`` int64, in the sorted layout."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if len(mesh.faces) == 0:
        raise ValueError("mesh has no faces")
    if not normalised:
        vertices = normalise(vertices)
    return canonical_faces(quantise(vertices, levels), np.asarray(mesh.faces)).reshape(-1)


def sequence(face_tokens: np.ndarray, label: int, vocab: MeshVocab, length: int | None = None) -> np.ndarray:
    """``[class, bos, faces..., eos]``, right-filled with ``eos`` to ``length`` when given."""
    body = np.concatenate([[vocab.class_token(label), vocab.bos], face_tokens, [vocab.eos]])
    if length is not None:
        if len(body) > length:
            raise ValueError(f"sequence of {len(body)} tokens does not fit length {length}")
        body = np.concatenate([body, np.full(length - len(body), vocab.eos)])
    return body.astype(np.int64)


@dataclass
class DecodeReport:
    """What detokenising one generated sequence found (all counts are faces unless named otherwise)."""

    ended: bool = False  # an eos was generated
    faces_read: int = 0  # complete 9-token faces before eos (or the end)
    faces_kept: int = 0  # after merging vertices and dropping degenerate / repeated faces
    degenerate: int = 0
    duplicates: int = 0
    bad_tokens: int = 0  # non-coordinate tokens (bos, class ids) inside the face stream
    trailing_tokens: int = 0  # tokens of an incomplete last face
    out_of_order: int = 0  # faces whose first vertex comes before the previous face's (sort order broken)
    watertight: bool = False
    manifold: bool = False  # every edge shared by exactly two faces, consistently wound
    valid: bool = False  # non-empty, watertight, manifold
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decode(tokens: torch.Tensor | np.ndarray, vocab: MeshVocab) -> tuple[trimesh.Trimesh, DecodeReport]:
    """Generated face tokens (what follows ``bos``) to a mesh and a :class:`DecodeReport`; never raises on garbage.

    ``mesh.metadata["source_faces"]`` says which face of the token stream each face of the mesh came from.

    Reading stops at the first ``eos``. Non-coordinate tokens invalidate the face they sit in (counted in
    ``bad_tokens``); an incomplete last face is dropped; equal vertices are merged and degenerate faces dropped.
    """
    t = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int64).reshape(-1)
    report = DecodeReport()
    ends = np.flatnonzero(t == vocab.eos)
    if len(ends):
        report.ended = True
        t = t[: ends[0]]
    n_faces = len(t) // TOKENS_PER_FACE
    report.trailing_tokens = len(t) - n_faces * TOKENS_PER_FACE
    faces = t[: n_faces * TOKENS_PER_FACE].reshape(n_faces, 3, 3)
    report.faces_read = n_faces
    good = (faces < vocab.levels).all((1, 2))
    report.bad_tokens = int((faces >= vocab.levels).sum())
    faces = faces[good]
    source = np.flatnonzero(good)  # which face of the stream each kept face is
    if len(faces) > 1:
        first = faces[:, 0] @ np.array([vocab.levels**2, vocab.levels, 1])
        report.out_of_order = int((np.diff(first) < 0).sum())
    mesh = clean_mesh(dequantise(faces[:, :, ::-1], vocab.levels), report, source)  # z y x -> x y z
    return mesh, report


def clean_mesh(corners: np.ndarray, report: DecodeReport, source: np.ndarray | None = None) -> trimesh.Trimesh:
    """Triangles given by their corners' coordinates ``[F, 3, 3]`` (x y z) to a mesh, filling in ``report``.

    Equal corners merge into one vertex; degenerate faces (two equal corners) and repeated faces (the same three
    vertices) are dropped and counted; ``watertight``, ``manifold``, ``valid`` and ``faces_kept`` are set.
    ``mesh.metadata["source_faces"]`` is the entry of ``source`` (default: the row of ``corners``) each face
    came from.
    """
    source = np.arange(len(corners)) if source is None else np.asarray(source)
    unique, inverse = np.unique(corners.reshape(-1, 3), axis=0, return_inverse=True)
    f = inverse.reshape(-1, 3)
    degenerate = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    report.degenerate = int(degenerate.sum())
    f, source = f[~degenerate], source[~degenerate]
    order_free = np.sort(f, 1)
    _, first_index = np.unique(order_free, axis=0, return_index=True)
    report.duplicates = len(f) - len(first_index)
    f, source = f[np.sort(first_index)], source[np.sort(first_index)]
    mesh = trimesh.Trimesh(unique.reshape(-1, 3), f, process=False)
    mesh.metadata["source_faces"] = source
    if len(f):
        mesh.remove_unreferenced_vertices()
    report.faces_kept = len(mesh.faces)
    if report.faces_kept == 0:
        report.errors.append("no valid face")
    else:
        report.watertight = bool(mesh.is_watertight)
        report.manifold = bool(mesh.is_watertight and mesh.is_winding_consistent)
    report.valid = report.faces_kept > 0 and report.watertight and report.manifold
    return mesh


def write_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` as OBJ, PLY or GLB (by suffix) atomically; another suffix is a ValueError naming it."""
    path = Path(path)
    kind = check_mesh_path(path)
    mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)  # without metadata (GLB would embed it)
    write_atomic(path, lambda tmp: mesh.export(tmp, file_type=kind))
    return path


def check_mesh_path(path: str | os.PathLike) -> str:
    """The trimesh file type of ``path``'s suffix; a suffix other than .obj/.ply/.glb is a ValueError."""
    suffix = Path(path).suffix.lower()
    if suffix not in MESH_FORMATS:
        raise ValueError(
            f"unsupported mesh file extension {suffix or '(none)'!r} in {str(path)!r}; use one of "
            f"{', '.join(MESH_FORMATS)}"
        )
    return MESH_FORMATS[suffix]


def read_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """A mesh file trimesh can read, with at least one face; otherwise a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {str(path)!r}")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for unreadable files
        raise ValueError(f"cannot read mesh file {str(path)!r}: {err}") from err
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"mesh file {str(path)!r} holds no faces")
    return mesh
