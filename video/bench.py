"""``mmaccel bench video``: every method on the same classes and seeds, in one process, speed beside quality.

Speed is quoted as ratios to the plain-AR run made here, at each batch size: ``step_compression`` (AR forwards /
forwards) and ``speedup`` (AR wall / wall). ``ceiling`` is step compression x t(1)/t(L+1), with t the measured
time of one guided forward of 1 and of L+1 tokens at that batch size. Quality, per method: the held-out video
classifier's class accuracy (shape and motion) and ``fvd_domain``, a Frechet distance between its features of the
generated clips and of held-out reference clips. ``ar@seed2`` (AR on a second seed set) is the noise floor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix
from tqdm.auto import tqdm

from mmaccel.bench.timing import forward_times as measured_forward_times
from mmaccel.eval.generative import fid_from_features
from mmaccel.methods import parse_method
from mmaccel.models import CFGModel
from mmaccel.sampling import SamplingConfig

from .classifier import VideoClassifier
from .data import KINDS, MOTIONS, SEEDS, make_clips
from .model import WEIGHTS_DIR
from .pipeline import DEFAULTS, VideoARPipeline
from .schedule import split_schedule

SECOND_SEED_SET = 1_000_000


def forward_times(pipe: VideoARPipeline, batch: int, windows: list[int], guidance_scale: float) -> dict[int, float]:
    """t(L+1) per window L (0: AR) of the guided model at ``batch``, half-way through a clip."""
    model = CFGModel(pipe.model, guidance_scale) if guidance_scale != 1.0 else pipe.model
    prompt = pipe.model.class_prompt(torch.zeros(batch, dtype=torch.long))
    return measured_forward_times(model, prompt, windows, context=pipe.layout.num_tokens // 2)


def run_method(pipe: VideoARPipeline, spec: str, labels: list[int], seed: int, batch_size: int, bar=None, **kw) -> dict:
    core_spec, schedule = split_schedule(spec)
    name, params = parse_method(core_spec)
    clips, steps, wall = [], [], 0.0
    for start in range(0, len(labels), batch_size):
        out = pipe(labels[start : start + batch_size], method=spec, seed=seed + start, progress=False, **kw)
        clips += out.frames
        steps += [s["steps"] for s in out.stats]
        wall += out.stats[0]["batch_wall_s"]
        if bar is not None:
            bar.update(len(out.frames))
    # A schedule's window varies from step to step; the ceiling is then quoted at its widest (a lower bound).
    # A tree's ceiling is timed at its nodes, not its depth.
    window = pipe.build_decoder(name, SamplingConfig(), 1.0, **params).verify_nodes
    return {"method": spec, "batch_size": batch_size, "window": window, "schedule": schedule, "clips": np.stack(clips),
            "nfe": float(np.mean(steps)), "wall_s": wall}


def part_accuracies(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``class_accuracy``, the share of clips whose shape (``shape_accuracy``) and whose motion
    (``motion_accuracy``) the classifier reads as their class's (class = shape x motion, :mod:`.data`), and
    ``shape_confusion[i][j]``: clips of shape ``KINDS[i]`` read as ``KINDS[j]``."""
    pred_shape, pred_motion = np.divmod(preds, len(MOTIONS))
    shape, motion = np.divmod(labels, len(MOTIONS))
    # Which shape each requested shape was read as (rows: requested, in KINDS order): where the shape is lost.
    confusion = multiclass_confusion_matrix(torch.as_tensor(pred_shape), torch.as_tensor(shape), len(KINDS))
    return {"class_accuracy": float(np.mean(preds == labels)), "shape_accuracy": float(np.mean(pred_shape == shape)),
            "motion_accuracy": float(np.mean(pred_motion == motion)), "shape_confusion": confusion.tolist()}


def run_bench(
    model: str | None = None,
    methods: list[str] | tuple[str, ...] = ("ar", "sjd", "mc-sjd", "mc-sjd:init=temporal-repeat"),
    num_videos: int = 16,
    batch_sizes: list[int] | tuple[int, ...] = (1, 8),
    guidance_scale: float | None = None,
    temperature: float | None = None,
    seed: int = 0,
    num_reference: int = 256,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One record per (method, batch size), plus ``ar@seed2``; all in this process, on the same seeds."""
    for spec in methods:
        parse_method(split_schedule(spec)[0])  # an unknown method, parameter or schedule fails before any work
    pipe = VideoARPipeline.from_pretrained(model)
    folder = Path(model) if model is not None else WEIGHTS_DIR
    classifier = VideoClassifier.from_pretrained(folder / "classifier.safetensors")
    ref_clips, _ = make_clips(num_reference, SEEDS["reference"], pipe.layout.frames, pipe.layout.height * pipe.vq.config.downsample)
    ref_feats = classifier.embed(ref_clips)[0]
    labels = [i % pipe.model.num_classes for i in range(num_videos)]
    guidance_scale = DEFAULTS["guidance_scale"] if guidance_scale is None else guidance_scale
    temperature = DEFAULTS["temperature"] if temperature is None else temperature
    kw = dict(guidance_scale=guidance_scale, temperature=temperature)
    methods = ["ar", *[m for m in methods if m != "ar"]]
    batch_sizes = sorted(set(batch_sizes))
    with tqdm(total=num_videos * (len(methods) * len(batch_sizes) + 1), desc="clips", disable=not progress) as bar:
        runs = {b: [run_method(pipe, m, labels, seed, b, bar, **kw) for m in methods] for b in batch_sizes}
        noise = run_method(pipe, "ar", labels, seed + SECOND_SEED_SET, batch_sizes[-1], bar, **kw)
    noise["method"] = "ar@seed2"
    windows = sorted({r["window"] for rs in runs.values() for r in rs})
    times = {b: forward_times(pipe, b, windows, guidance_scale) for b in batch_sizes}
    scored: dict[str, dict] = {}
    records = []
    for b in batch_sizes:
        ar = runs[b][0]
        for r in [*runs[b], *([noise] if b == batch_sizes[-1] else [])]:
            clips = r.pop("clips")
            if r["method"] not in scored:  # a seed's clip is the same at every batch size: score it once
                feats, preds = classifier.embed(clips)
                scored[r["method"]] = {**part_accuracies(np.asarray(preds), np.asarray(labels)),
                                       "fvd_domain": fid_from_features(ref_feats, feats)}
            t1, tl = times[b][0], times[b][r["window"]]
            r.update(
                tokens=pipe.layout.num_tokens,
                step_compression=ar["nfe"] / r["nfe"],
                speedup=ar["wall_s"] / r["wall_s"],
                t1_ms=t1 * 1e3,
                t_window_ms=tl * 1e3,
                ceiling=ar["nfe"] / r["nfe"] * t1 / tl,
                num_videos=num_videos,
                num_reference=num_reference,
                threads=torch.get_num_threads(),
                seed=seed if r["method"] != "ar@seed2" else seed + SECOND_SEED_SET,
                **kw,
                **scored[r["method"]],
            )
            records.append(r)
    return records


def format_table(records: list[dict[str, Any]]) -> str:
    lines = [f"{'method':<30} {'b':>2} {'nfe':>6} {'step x':>6} {'wall s':>7} {'speedup':>7} {'ceiling':>7} "
             f"{'acc':>5} {'shape':>5} {'motion':>6} {'fvd':>7}"]
    for r in records:
        lines.append(
            f"{r['method']:<30} {r['batch_size']:>2} {r['nfe']:>6.1f} {r['step_compression']:>6.2f} {r['wall_s']:>7.1f} "
            f"{r['speedup']:>7.2f} {r['ceiling']:>7.2f} {r['class_accuracy']:>5.2f} {r['shape_accuracy']:>5.2f} "
            f"{r['motion_accuracy']:>6.2f} {r['fvd_domain']:>7.2f}"
        )
    return "\n".join(lines)
