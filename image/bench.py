"""``mmaccel bench image``: every method on the same classes and seeds, in one process, speed beside quality.

Speed is quoted only as ratios to the plain-AR run made here: ``step_compression`` (AR forwards / forwards per
image) and ``speedup`` (AR wall time / wall time). Quality: the domain FID of the samples against real images
of the procedural generator (features of the held-out shape classifier) and the classifier's accuracy on the
requested classes. An extra AR run on a second seed set gives FID's own noise floor.

``nodes`` is the drafts one verify forward holds (the window, a tree's nodes, a dynamic tree's budget), and
``ceiling`` the wall speed-up no decoder running those forwards can beat: step compression x t(1) / t(nodes + 1),
with ``t`` one guided forward timed here at the bench's batch size, mid-image. It leaves out a drafter's own
forwards (a draft model's, EAGLE's head's), so for those it is looser still.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmaccel.data.scenes import make_dataset
from mmaccel.eval.fid import DomainFID, FeatureExtractor
from mmaccel.methods import parse_method

from .bench_engine import verified_drafts, verify_cost
from .classifier import ShapeClassifier
from .defaults import DEFAULTS, GPT_STYLE
from .pipeline import DEFAULT_WEIGHTS, ImageARPipeline

#: A seed far from every training seed: these real images are used only as the FID reference.
REAL_SEED = 7_000_003
#: Offset of the second seed set for the AR noise-floor run.
SECOND_SEED_SET = 1_000_000
#: Below this many images a Frechet distance is dominated by its estimation noise.
FEW_IMAGES_FOR_FID = 50


def _to_uint8(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).contiguous()


def run_method(
    pipe: ImageARPipeline,
    method: str,
    labels: list[int],
    seed: int,
    batch_size: int,
    bar: tqdm | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Generate ``labels`` with ``method`` (a name, or ``name:param=value:...``) in batches; raw figures."""
    name, params = parse_method(method)
    drafter = pipe.build_decoder(name, **params).drafter
    nodes = 0 if drafter is None else verified_drafts(drafter, drafter.window)
    images, steps, wall, batch_nfe, draft_nfe = [], [], 0.0, 0, 0
    for start in range(0, len(labels), batch_size):
        if bar is not None:
            bar.set_postfix_str(method)
        batch = labels[start : start + batch_size]
        out = pipe(batch, method=name, seed=seed + start, progress=False, **kwargs, **params)
        images += out.images
        steps += [s["steps"] for s in out.stats]
        wall += out.stats[0]["batch_wall_s"]
        batch_nfe += out.stats[0]["batch_nfe"]
        draft_nfe += out.stats[0]["batch_draft_nfe"]
        if bar is not None:
            bar.update(len(batch))
    tokens = pipe.num_tokens
    return {
        "method": method,
        "images": _to_uint8(images),
        "nfe": float(np.mean(steps)),
        "tokens": tokens,
        "mean_accepted_length": float(np.mean([tokens / s for s in steps])),
        "batch_nfe": batch_nfe,
        "draft_nfe": draft_nfe,
        "wall_s": wall,
        "nodes": nodes,
    }


def run_bench(
    model: str | None = None,
    methods: list[str] | tuple[str, ...] = ("ar", "sjd", "gsd", "lantern", "lantern-draft", "lantern++", "draft"),
    num_images: int = 100,
    num_real: int = 5000,
    batch_size: int = 50,
    guidance_scale: float | None = None,
    seed: int = 0,
    temperature: float | None = None,
    top_k: int | None = DEFAULTS["top_k"],
    top_p: float | None = DEFAULTS["top_p"],
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One record per method (plus ``ar@seed2``, the noise floor), with the fields of DESIGN.md; sampling
    settings default to the default model's (:data:`mmaccel.image.defaults.DEFAULTS`). ``progress`` shows a
    bar over the images generated (to stderr)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for method in methods:
        parse_method(method)  # an unknown method or parameter fails before any work
    if num_images < FEW_IMAGES_FOR_FID:
        warnings.warn(
            f"num_images={num_images}: with fewer than {FEW_IMAGES_FOR_FID} images the FID is mostly estimation "
            "noise; compare it only with the ar@seed2 noise floor",
            stacklevel=2,
        )
    pipe = ImageARPipeline.from_pretrained(model)
    classifier_path = Path(model) if model is not None else DEFAULT_WEIGHTS
    classifier = ShapeClassifier.from_pretrained(classifier_path / "classifier.safetensors")
    extractor = FeatureExtractor(classifier, classifier.config.feature_dim)
    # The real reference is the distribution the GPT was trained to produce (see train_gpt.STYLE).
    real_images, _ = make_dataset(num_real, seed=REAL_SEED, size=classifier.config.image_size, style=GPT_STYLE)
    fid = DomainFID(extractor, torch.from_numpy(real_images).permute(0, 3, 1, 2).contiguous())
    labels = [i % pipe.num_classes for i in range(num_images)]
    guidance_scale = DEFAULTS["guidance_scale"] if guidance_scale is None else guidance_scale
    temperature = DEFAULTS["temperature"] if temperature is None else temperature
    kwargs = dict(guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p)

    methods = ["ar", *[m for m in methods if m != "ar"]]
    with tqdm(total=num_images * (len(methods) + 1), desc="images", unit="img", disable=not progress) as bar:
        runs = [run_method(pipe, m, labels, seed, batch_size, bar, **kwargs) for m in methods]
        noise = run_method(pipe, "ar", labels, seed + SECOND_SEED_SET, batch_size, bar, **kwargs)
    noise["method"] = "ar@seed2"
    runs.append(noise)

    ar = runs[0]
    # Interleaved repeats of every forward length the methods ran, at this batch size (guided: 2 rows a sample).
    cost = verify_cost(pipe, min(batch_size, num_images), sorted({r["nodes"] for r in runs} - {0}), guidance_scale, 7)
    records = []
    for r in runs:
        images = r.pop("images")
        predicted = classifier.predict(images.permute(0, 2, 3, 1).contiguous())
        r["fid"] = fid.score(images)
        r["class_accuracy"] = float((predicted == torch.tensor(labels)).float().mean())
        r["step_compression"] = ar["nfe"] / r["nfe"]
        r["speedup"] = ar["wall_s"] / r["wall_s"]
        r["ceiling"] = r["step_compression"] * cost[1] / cost[r["nodes"] + 1]
        r.update(num_images=num_images, num_real=num_real, batch_size=batch_size, **kwargs)
        records.append(r)
    return records


def format_table(records: list[dict[str, Any]]) -> str:
    lines = [
        f"{'method':<14} {'nfe/img':>8} {'accept len':>10} {'nodes':>5} {'step x':>7} {'wall s':>8} {'speedup':>8} "
        f"{'ceiling':>7} {'FID':>8} {'acc':>6}"
    ]
    for r in records:
        lines.append(
            f"{r['method']:<14} {r['nfe']:>8.1f} {r['mean_accepted_length']:>10.2f} {r['nodes']:>5} "
            f"{r['step_compression']:>7.2f} {r['wall_s']:>8.1f} {r['speedup']:>8.2f} {r['ceiling']:>7.2f} "
            f"{r['fid']:>8.2f} {r['class_accuracy']:>6.2f}"
        )
    return "\n".join(lines)
