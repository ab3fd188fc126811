"""The mesh modality's :class:`mmaccel.sample.Sampler`: a batch of :class:`MeshARPipeline`, one mesh file each.

A sample whose tokens decode to no face is still a file (its index must exist for a resumed or sharded run): an
OBJ holding only a comment, or an empty PLY / GLB; ``mmaccel eval mesh`` counts such files as empty. ``--npz``
holds each file's triangle soup: ``arr_0`` float32 ``[N, F_max, 3, 3]`` (face, corner, xyz), zero-padded, with
``lengths`` the faces of each mesh, read back from the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from .pipeline import MeshARPipeline
from .tokenizer import MESH_FORMATS

#: --format -> file suffix.
MESH_FILE_FORMATS = {kind: suffix for suffix, kind in MESH_FORMATS.items()}


def check_format(fmt: str) -> str:
    """The suffix of mesh format ``fmt`` (obj, ply, glb); another is refused naming --format."""
    if fmt not in MESH_FILE_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(MESH_FILE_FORMATS)}, got {fmt!r}")
    return MESH_FILE_FORMATS[fmt]


def load_mesh(path: str | Path) -> trimesh.Trimesh:
    """A mesh file (OBJ, PLY, GLB) as one Trimesh, possibly without faces; an unreadable file raises ValueError."""
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for unreadable files
        raise ValueError(f"cannot read mesh file {str(path)!r}: {err}") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"cannot read mesh file {str(path)!r}: it holds no triangle mesh")
    return mesh


def triangle_soup(path: str | Path) -> np.ndarray:
    """float32 ``[F, 3, 3]``: each face's corners."""
    mesh = load_mesh(path)
    if len(mesh.faces) == 0:
        return np.zeros((0, 3, 3), dtype=np.float32)
    return np.asarray(mesh.vertices, dtype=np.float32)[np.asarray(mesh.faces)]


def save_mesh(mesh: trimesh.Trimesh, path: Path, note: str = "") -> None:
    kind = MESH_FORMATS[path.suffix.lower()]
    if len(mesh.faces) == 0 and kind == "obj":  # trimesh cannot export an OBJ without faces
        path.write_text(f"# mmaccel: no faces{': ' + note if note else ''}\n")
        return
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(str(path), file_type=kind)


class MeshSampler:
    """Generates batches of :class:`MeshARPipeline` with one method and fixed sampling settings; conditions are
    class indices, and sample ``i`` of a batch uses ``seeds[i]`` (consecutive, as the pipeline seeds meshes)."""

    def __init__(self, pipe: MeshARPipeline, method: str, params: dict[str, Any], suffix: str, **sampling: Any):
        from mmaccel.sampling import SamplingConfig

        self.pipe, self.method, self.params, self.suffix = pipe, method, params, suffix
        self.max_faces = sampling.pop("max_faces", None)
        self.sampling = sampling
        pipe.check_faces(self.max_faces)
        config = SamplingConfig(sampling["temperature"], sampling.get("top_k"), sampling.get("top_p"))
        pipe.build_decoder(method, config, sampling["guidance_scale"], **params)

    def generate(self, conditions: Sequence[Any], seeds: Sequence[int]) -> list[tuple[Any, dict[str, Any]]]:
        if list(seeds) != list(range(seeds[0], seeds[0] + len(seeds))):
            raise ValueError(f"MeshSampler takes consecutive seeds, got {list(seeds)}")
        result = self.pipe(
            list(conditions),
            method=self.method,
            seed=seeds[0],
            max_faces=self.max_faces,
            progress=False,
            **self.sampling,
            **self.params,
        )
        out = []
        for mesh, s in zip(result.meshes, result.stats):
            note = ", ".join(s["report"].get("errors", [])) if isinstance(s.get("report"), dict) else ""
            out.append(
                (
                    (mesh, note),
                    {
                        "forwards": s["steps_to_end"],
                        "accepted_length": s["end_tokens"] / s["steps_to_end"],
                        "tokens": s["end_tokens"],
                        "forwards_full": s["steps"],
                        "faces": s["faces"],
                        "valid": bool(s["valid"]),
                        "batch_nfe": s["batch_nfe"],
                    },
                )
            )
        return out

    def save(self, media: tuple[trimesh.Trimesh, str], path: Path) -> None:
        save_mesh(media[0], path, media[1])
