"""The mesh tab of ``mmaccel demo``: plain AR and a method on the same class and seed, as 3D meshes (GLB), with
each mesh rendered in the colours of the forward that accepted each face."""

from __future__ import annotations

from typing import Any

from mmaccel.demo import DemoSide, DemoTab, check_folder, class_side_by_side, media_path


def _load(folder: str | None):
    from .pipeline import MeshARPipeline

    return MeshARPipeline.from_pretrained(check_folder(folder))


def _compare(
    pipe, condition: str, method: str, params: dict[str, Any], seed: int, progress
) -> tuple[DemoSide, DemoSide]:
    from .methods import check_mesh_params
    from .render import render
    from .tokenizer import write_mesh

    label = pipe.class_label(condition)  # an unknown class names the model's classes
    params = check_mesh_params(method, params)  # refused before anything runs

    def present(out):
        mesh, s = out.meshes[0], out.stats[0]
        # as `mmaccel generate mesh` renders it: the kept faces, coloured by the forward that accepted them
        steps = out.face_steps[0][mesh.metadata.get("source_faces", [])] if len(mesh.faces) else None
        picture = render(mesh, steps, max_step=s["steps_to_end"])
        path = write_mesh(mesh, media_path(".glb")) if len(mesh.faces) else None  # None: nothing decoded
        return None if path is None else str(path), picture, s["steps"], s["tokens"]

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
        "the engine runs; `xspec` takes `rule=...` and that rule's parameters.",
    )
