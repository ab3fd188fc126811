"""The video tab of ``mmaccel demo``: plain AR and a method on the same class and seed, as looping GIFs, with
each clip's per-frame acceptance maps as a strip under its frames."""

from __future__ import annotations

from typing import Any

from mmaccel.demo import DemoSide, DemoTab, check_folder, class_side_by_side, media_path


def _load(folder: str | None):
    from .pipeline import VideoARPipeline

    return VideoARPipeline.from_pretrained(check_folder(folder))


def _compare(
    pipe, condition: str, method: str, params: dict[str, Any], seed: int, progress
) -> tuple[DemoSide, DemoSide]:
    from mmaccel.methods import check_params

    from .cli import acceptance_strip, write_clip

    label = pipe.class_label(condition)  # an unknown class names the model's classes
    params = check_params(method, params)  # refused before anything runs

    def present(out):
        clip = media_path(".gif")
        write_clip(out.frames[0], clip)  # as `mmaccel generate video --out x.gif` writes it
        strip = acceptance_strip(out.acceptance_maps[0], out.frames[0])
        return str(clip), strip, out.stats[0]["steps"], out.stats[0]["tokens"]

    return class_side_by_side(pipe, label, method, params, seed, progress, present)


def demo_tab() -> DemoTab:
    from mmaccel.methods import METHODS

    from .data import CLASS_NAMES
    from .pipeline import DEFAULT_METHOD

    return DemoTab(
        name="video",
        conditions=list(CLASS_NAMES),
        # the default model has no draft model: the Jacobi methods (init=temporal-repeat or temporal-sample)
        methods=[name for name, m in METHODS.items() if m.drafter == "jacobi"],
        default_method=DEFAULT_METHOD,
        load=_load,
        compare=_compare,
        output="video",
        notes="Clips loop as GIFs. Under each clip's frames: that frame's acceptance map (brighter = accepted by a "
        "later forward). Jacobi methods take `init=temporal-repeat` or `init=temporal-sample`.",
    )
