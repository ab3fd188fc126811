"""``mmaccel bench mesh``: every method on the same classes and seeds, in one process, speed beside quality.

Speed is quoted as ratios to the plain-AR run made here, at each batch size: ``step_compression`` (AR forwards /
forwards, over the whole fixed-length sequence the engine generates), ``step_compression_to_end`` (the same up to
each mesh's ``eos``: what a decoder that stopped at ``eos`` would save) and ``speedup`` (AR wall / wall, whole
sequence). ``ceiling`` is step compression x t(1)/t(L+1), with t the measured time of one guided forward of 1 and
of L+1 tokens at that batch size. Quality, per method: validity (watertight and manifold), Chamfer and Hausdorff
distance to the nearest held-out mesh of the requested class, MMD / COV / 1-NNA against the held-out set, the
held-out PointNet's class accuracy and a Frechet distance in its feature space. ``ar@seed2`` (AR on a second seed
set) is the noise floor of every quality figure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmaccel.eval.generative import fid_from_features
from mmaccel.sampling import SamplingConfig

from .classifier import PointNetClassifier
from .data import CLASS_NAMES, make_meshes
from .grammar import mesh_target
from .methods import parse_mesh_method
from .metrics import nearest_reference, set_metrics, surface_points, validity_breakdown
from .model import WEIGHTS_DIR
from .pipeline import DEFAULTS, MeshARPipeline

#: Seeds of the held-out reference meshes (training uses 100000+ for the GPT, 200000+ for the classifier).
REFERENCE_SEED = 7_000_003
SECOND_SEED_SET = 1_000_000


@torch.no_grad()
def forward_times(
    pipe: MeshARPipeline,
    batch: int,
    windows: list[int],
    guidance_scale: float,
    repeats: int = 5,
    context: int = 160,
    structure_mask: bool = False,
) -> dict[int, float]:
    """Median seconds of one guided forward of ``L + 1`` tokens after ``context`` tokens, per window ``L`` (0: AR),
    of the target the methods run (with the structure mask when it is on)."""
    model = mesh_target(pipe.model, structure_mask, guidance_scale)
    prompt = pipe.prompt([0] * batch)
    out = {}
    for w in sorted(set([0, *windows])):
        cache = model.new_cache(batch, context + w + 4)
        model.prefill(prompt, cache)
        fill = torch.zeros(batch, context - 2, dtype=torch.long)
        model.forward(fill, 2 + torch.arange(context - 2).expand(batch, -1), cache)
        tokens = torch.zeros(batch, w + 1, dtype=torch.long)
        positions = context + torch.arange(w + 1).expand(batch, -1)
        times = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            model.forward(tokens, positions, cache)
            times.append(time.perf_counter() - t)
        out[w] = float(np.median(times[1:]))
    return out


def run_method(
    pipe: MeshARPipeline,
    spec: str,
    labels: list[int],
    seed: int,
    batch_size: int,
    bar: tqdm | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    name, params = parse_mesh_method(spec)
    meshes, reports, steps, to_end, end_tokens, wall = [], [], [], [], [], 0.0
    window = 0
    for start in range(0, len(labels), batch_size):
        if bar is not None:
            bar.set_postfix_str(f"{spec} b{batch_size}")
        out = pipe(
            labels[start : start + batch_size], method=name, seed=seed + start, progress=False, **kwargs, **params
        )
        meshes += out.meshes
        reports += out.reports
        steps += [s["steps"] for s in out.stats]
        to_end += [s["steps_to_end"] for s in out.stats]
        end_tokens += [s["end_tokens"] for s in out.stats]
        wall += out.stats[0]["batch_wall_s"]
        if bar is not None:
            bar.update(len(out.meshes))
    # The ceiling's t(L+1) is timed at what one verify forward carries: a tree's nodes, not its depth.
    window = pipe.build_decoder(name, SamplingConfig(), 1.0, **params).verify_nodes
    return {
        "method": spec,
        "batch_size": batch_size,
        "window": window,
        "meshes": meshes,
        "reports": reports,
        "nfe": float(np.mean(steps)),
        "nfe_to_end": float(np.mean(to_end)),
        "tokens_to_end": float(np.mean(end_tokens)),
        "wall_s": wall,
    }


def by_class(flags: list[bool], labels: list[int]) -> dict[str, float]:
    """The share of ``flags`` set among the meshes of each class drawn."""
    return {
        name: float(np.mean([f for f, y in zip(flags, labels) if y == k]))
        for k, name in enumerate(CLASS_NAMES)
        if k in set(labels)
    }


def quality(meshes, reports, labels, classifier, references, reference_feats, levels: int = 128) -> dict[str, Any]:
    clouds = [surface_points(m) for m in meshes]
    chamfer, hausdorff = [], []
    for cloud, label in zip(clouds, labels):
        if cloud is not None:
            c, h = nearest_reference(cloud, references[CLASS_NAMES[label]])
            chamfer.append(c)
            hausdorff.append(h)
    feats, preds = classifier.embed(meshes)
    correct = [p == y for p, y in zip(preds, labels)]  # a mesh without surface counts as wrong
    kept = [f for f in feats if f is not None]
    everything = [r for name in CLASS_NAMES for r in references[name]]
    sets = set_metrics([c for c in clouds if c is not None], everything)
    valid = [bool(m.is_watertight and m.is_winding_consistent and len(m.faces)) for m in meshes]
    return {
        "valid_rate": float(np.mean(valid)),
        # Validity by class, as accuracy: which shapes the GPT fails to close.
        "valid_by_class": by_class(valid, labels),
        "chamfer": float(np.mean(chamfer)) if chamfer else float("nan"),
        "hausdorff": float(np.mean(hausdorff)) if hausdorff else float("nan"),
        "scored": len(chamfer),
        "class_accuracy": float(np.mean(correct)),
        # Which classes the GPT draws as another: the overall figure alone cannot say where 80% is lost.
        "class_accuracy_by_class": by_class(correct, labels),
        "fid": fid_from_features(reference_feats, torch.stack(kept).double()) if len(kept) > 1 else float("nan"),
        "faces_mean": float(np.mean([len(m.faces) for m in meshes])),
        "validity": validity_breakdown(meshes, reports, levels),
        **sets,
    }


def run_bench(
    model: str | None = None,
    methods: list[str] | tuple[str, ...] = ("ar", "sjd", "sjd:init=face", "xspec", "xspec:rule=typical", "gsd"),
    num_meshes: int = 18,
    batch_sizes: list[int] | tuple[int, ...] = (1, 8),
    guidance_scale: float | None = None,
    temperature: float | None = None,
    seed: int = 0,
    num_reference: int = 12,
    progress: bool = False,
    structure_mask: bool | None = None,
) -> list[dict[str, Any]]:
    """One record per (method, batch size), plus ``ar@seed2``; all in this process, on the same seeds.
    ``structure_mask`` (default: the pipeline's, on) is the target's grammar mask, for every method and AR."""
    for spec in methods:
        parse_mesh_method(spec)  # an unknown method or parameter fails before any work
    pipe = MeshARPipeline.from_pretrained(model)
    # A candidate GPT folder (e.g. a training run) usually holds no classifier: score it with the shipped one, so
    # two GPTs compared by this bench are judged by the same held-out classifier.
    folder = Path(model) if model is not None else WEIGHTS_DIR
    if not (folder / "classifier.safetensors").exists():
        folder = WEIGHTS_DIR
    classifier = PointNetClassifier.from_pretrained(folder / "classifier.safetensors")
    reference_meshes = make_meshes(num_reference, REFERENCE_SEED)
    references = {k: [surface_points(m) for m in v] for k, v in reference_meshes.items()}
    reference_feats = torch.stack([f for v in reference_meshes.values() for f in classifier.embed(v)[0]]).double()
    labels = [i % pipe.vocab.num_classes for i in range(num_meshes)]
    guidance_scale = DEFAULTS["guidance_scale"] if guidance_scale is None else guidance_scale
    temperature = DEFAULTS["temperature"] if temperature is None else temperature
    structure_mask = DEFAULTS["structure_mask"] if structure_mask is None else bool(structure_mask)
    kwargs = dict(guidance_scale=guidance_scale, temperature=temperature, structure_mask=structure_mask)
    methods = ["ar", *[m for m in methods if m != "ar"]]
    batch_sizes = sorted(set(batch_sizes))
    records = []
    total = num_meshes * (len(methods) * len(batch_sizes) + 1)
    with tqdm(total=total, desc="meshes", disable=not progress) as bar:
        runs = {b: [run_method(pipe, m, labels, seed, b, bar, **kwargs) for m in methods] for b in batch_sizes}
        noise = run_method(pipe, "ar", labels, seed + SECOND_SEED_SET, batch_sizes[-1], bar, **kwargs)
    noise["method"] = "ar@seed2"
    windows = sorted({r["window"] for rs in runs.values() for r in rs})
    times = {b: forward_times(pipe, b, windows, guidance_scale, structure_mask=structure_mask) for b in batch_sizes}
    scored: dict[str, dict] = {}
    for b in batch_sizes:
        ar = runs[b][0]
        for r in [*runs[b], *([noise] if b == batch_sizes[-1] else [])]:
            meshes, reports = r.pop("meshes"), r.pop("reports")
            if r["method"] not in scored:  # a seed's mesh is the same at every batch size: score it once
                scored[r["method"]] = quality(
                    meshes, reports, labels, classifier, references, reference_feats, pipe.vocab.levels
                )
            t1, tl = times[b][0], times[b][r["window"]]
            r.update(
                tokens=pipe.model.max_faces * 9 + 1,
                step_compression=ar["nfe"] / r["nfe"],
                step_compression_to_end=ar["nfe_to_end"] / r["nfe_to_end"],
                speedup=ar["wall_s"] / r["wall_s"],
                t1_ms=t1 * 1e3,
                t_window_ms=tl * 1e3,
                ceiling=ar["nfe"] / r["nfe"] * t1 / tl,
                num_meshes=num_meshes,
                num_reference_per_class=num_reference,
                seed=seed if r["method"] != "ar@seed2" else seed + SECOND_SEED_SET,
                **kwargs,
                **scored[r["method"]],
            )
            records.append(r)
    return records


def format_table(records: list[dict[str, Any]]) -> str:
    lines = [
        f"{'method':<20} {'b':>2} {'nfe':>6} {'step x':>6} {'to-end x':>8} {'wall s':>7} {'speedup':>7} "
        f"{'ceiling':>7} {'valid':>5} {'chamfer':>7} {'hausd':>6} {'acc':>5} {'mmd':>6} {'cov':>5} {'1-nna':>5} "
        f"{'fid':>6}"
    ]
    for r in records:
        lines.append(
            f"{r['method']:<20} {r['batch_size']:>2} {r['nfe']:>6.1f} {r['step_compression']:>6.2f} "
            f"{r['step_compression_to_end']:>8.2f} {r['wall_s']:>7.1f} {r['speedup']:>7.2f} {r['ceiling']:>7.2f} "
            f"{r['valid_rate']:>5.2f} {r['chamfer']:>7.4f} {r['hausdorff']:>6.3f} {r['class_accuracy']:>5.2f} "
            f"{r['mmd']:>6.4f} {r['cov']:>5.2f} {r['nna']:>5.2f} {r['fid']:>6.1f}"
        )
    return "\n".join(lines)


def format_validity(records: list[dict[str, Any]]) -> str:
    """Which validity check fails, per method (one row per method: the meshes are the same at every batch size)."""
    keys = list(next(iter(records))["validity"])
    lines = [f"{'validity (fraction of meshes)':<20} " + " ".join(f"{k[:10]:>10}" for k in keys)]
    seen = set()
    for r in records:
        if r["method"] not in seen:
            seen.add(r["method"])
            lines.append(f"{r['method']:<20} " + " ".join(f"{r['validity'][k]:>10.2f}" for k in keys))
    return "\n".join(lines)
