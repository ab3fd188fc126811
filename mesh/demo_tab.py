"""The mesh tab of ``mmaccel demo``: plain AR and a method on the same class and seed, as 3D meshes (GLB), with
each mesh rendered in the colours of the forward that accepted each face."""

from __future__ import annotations

from typing import Any

from mmaccel.demo import DemoSide, DemoTab, check_folder, class_side_by_side, media_path


def _load(folder: str | None):
    from .pipeline import MeshARPipeline

    return MeshARPipeline.from_pretrained(check_folder(folder))


def coloured_glb(mesh, face_steps, max_step: int) -> str:
    """``mesh`` as a GLB whose faces carry the acceptance colours of :func:`render` (vertices unshared, so each
    face keeps its own colour), written atomically to a fresh demo path: the 3D view is an acceptance map too."""
    import numpy as np
    import trimesh

    from mmaccel.io import write_atomic

    from .render import scale_colour

    faces = np.asarray(mesh.faces)
    colours = scale_colour(np.asarray(face_steps, dtype=float) / max(max_step, 1))
    rgba = np.concatenate([colours, np.full((len(faces), 1), 255.0)], 1).round().astype(np.uint8)
    flat = trimesh.Trimesh(
        np.asarray(mesh.vertices)[faces].reshape(-1, 3),
        np.arange(3 * len(faces)).reshape(-1, 3),
        vertex_colors=np.repeat(rgba, 3, 0),
        process=False,
    )
    path = media_path(".glb")
    write_atomic(path, lambda tmp: flat.export(tmp, file_type="glb"))
    return str(path)


def _compare(
    pipe, condition: str, method: str, params: dict[str, Any], seed: int, progress
) -> tuple[DemoSide, DemoSide]:
    from .methods import check_mesh_params
    from .render import render

    label = pipe.class_label(condition)  # an unknown class names the model's classes
    params = check_mesh_params(method, params)  # refused before anything runs

    def present(out):
        mesh, s = out.meshes[0], out.stats[0]
        # as `mmaccel generate mesh` renders it: the kept faces, coloured by the forward that accepted them
        steps = out.face_steps[0][mesh.metadata.get("source_faces", [])] if len(mesh.faces) else None
        picture = render(mesh, steps, max_step=s["steps_to_end"])
        path = coloured_glb(mesh, steps, s["steps_to_end"]) if len(mesh.faces) else None  # None: nothing decoded
        return path, picture, s["steps"], s["tokens"]

    return class_side_by_side(pipe, label, method, params, seed, progress, present)


def demo_tab() -> DemoTab:
    from mmaccel.methods import METHODS

    from .data import CLASS_NAMES
    from .methods import HEADS_METHOD
    from .pipeline import DEFAULT_METHOD

    return DemoTab(
        name="mesh",
        conditions=list(CLASS_NAMES),
        # the shipped draft heads (xspec) and the Jacobi methods (init=face); there is no draft model
        methods=[HEADS_METHOD, *(name for name, m in METHODS.items() if m.drafter == "jacobi")],
        default_method=DEFAULT_METHOD,
        load=_load,
        compare=_compare,
        output="model3d",
        notes="Acceptance maps: the mesh rendered with each face in the colour of the forward that accepted it "
        "(scale below it, up to the forward that committed the end token). Forwards count the whole face budget "
        "the engine runs; the 3D view carries the same colours. `xspec` takes `rule=...` and that rule's parameters.",
    )
