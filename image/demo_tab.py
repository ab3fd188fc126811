"""The image tab of ``mmaccel demo``: plain AR and a method on the same class and seed, with acceptance maps."""

from __future__ import annotations

from typing import Any

from mmaccel.demo import DemoSide, DemoTab, check_folder, class_side_by_side


def _load(folder: str | None):
    from .pipeline import ImageARPipeline

    return ImageARPipeline.from_pretrained(check_folder(folder))


def class_names(pipe) -> list[str]:
    """The default model's class names; indices for another class-conditional model."""
    from mmaccel.data.scenes import CLASS_NAMES

    if pipe.num_classes is None:
        raise ValueError("this demo tab takes class-conditional models; the folder holds a text-to-image model")
    return list(CLASS_NAMES) if pipe.num_classes == len(CLASS_NAMES) else [str(i) for i in range(pipe.num_classes)]


def _compare(
    pipe, condition: str, method: str, params: dict[str, Any], seed: int, progress
) -> tuple[DemoSide, DemoSide]:
    from mmaccel.methods import check_params

    names = class_names(pipe)
    if condition not in names:
        raise ValueError(f"class {condition!r} is not a class of this model ({', '.join(names)})")
    params = check_params(method, params)  # refused before anything runs
    label = names.index(condition)

    def present(out):
        return out.images[0], out.acceptance_maps[0], out.stats[0]["steps"], out.stats[0]["tokens"]

    return class_side_by_side(pipe, label, method, params, seed, progress, present)


def demo_tab() -> DemoTab:
    from mmaccel.data.scenes import CLASS_NAMES
    from mmaccel.methods import METHODS

    from .defaults import DEFAULT_METHOD

    return DemoTab(
        name="image",
        conditions=list(CLASS_NAMES),
        methods=[m for m in METHODS if m != "ar"],
        default_method=DEFAULT_METHOD,
        load=_load,
        compare=_compare,
    )
