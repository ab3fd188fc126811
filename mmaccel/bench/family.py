"""Core methods on a real model family, side by side: ``mmaccel bench video|mesh --family NAME --model DIR``.

Every method runs on the same conditions and seeds in this process; speed is quoted as ratios to the AR run at
each batch size: ``step_compression`` (AR forwards / forwards), ``speedup`` (AR wall / wall), next to the ceiling
(step compression x t(1)/t(L+1), t measured here). ``matches_ar`` is the share of samples token-identical to AR's
(1.0 for a lossless method under greedy decoding, temperature 0). There is no quality field: the modalities'
metrics belong to their default models, and no real-family references are available here.

A family is any object with ``name``, ``prompt(conditions)``, ``decoder(name, params, sampling, guidance_scale,
prompt)``, ``num_tokens(prompt)``, ``timing_prompt(batch)`` (equal-length rows) and ``guided_model(scale)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmaccel.bench.timing import forward_times
from mmaccel.methods import DEFAULT_WINDOW, method, parse_method
from mmaccel.sampling import SamplingConfig


def _window(spec: str) -> int:
    name, params = parse_method(spec)
    drafter = method(name).drafter
    return 0 if drafter is None else int(params.get("window", DEFAULT_WINDOW[drafter]))


def run_family_bench(
    family: Any,
    methods: list[str],
    conditions: list,
    batch_sizes: list[int],
    guidance_scale: float,
    temperature: float,
    seed: int = 0,
    progress: bool = False,
    unit: str = "videos",
    top_k: int | None = None,
    top_p: float | None = None,
) -> list[dict[str, Any]]:
    """One record per (method, batch size); ``conditions`` holds one condition per sample (``num_<unit>``)."""
    sampling = SamplingConfig(temperature, top_k, top_p)
    methods = ["ar", *[m for m in methods if m != "ar"]]
    for spec in methods:
        if _window(spec) == 0 and parse_method(spec)[0] != "ar":
            raise ValueError(f"method {spec!r}: the family bench compares drafting methods with AR")
    records = []
    for b in sorted(set(batch_sizes)):
        runs = []
        for spec in methods:
            name, params = parse_method(spec)
            tokens, steps, wall = [], [], 0.0
            for start in range(0, len(conditions), b):
                prompt = family.prompt(conditions[start : start + b])
                decoder = family.decoder(name, params, sampling, guidance_scale, prompt)
                seeds = [seed + start + i for i in range(prompt.batch_size)]
                out = decoder.generate(prompt, family.num_tokens(prompt), seeds=seeds, progress=progress)
                tokens.append(out.tokens.cpu())
                steps += out.stats.steps_per_sample.tolist()
                wall += out.stats.wall_s
            runs.append((spec, torch.cat(tokens), float(np.mean(steps)), wall))
        prompt = family.timing_prompt(b)
        n = family.num_tokens(prompt)
        windows = sorted({_window(spec) for spec in methods})
        context = int(prompt.lengths.max()) + n // 2
        times = forward_times(family.guided_model(guidance_scale), prompt, windows, context)
        _, ar_tokens, ar_nfe, ar_wall = runs[0]
        for spec, toks, nfe, wall in runs:
            w = _window(spec)
            records.append({
                "method": spec, "family": family.name, "batch_size": b, "window": w, f"num_{unit}": len(conditions),
                "tokens": n, "nfe": nfe, "step_compression": ar_nfe / nfe, "wall_s": wall, "speedup": ar_wall / wall,
                "t1_ms": times[0] * 1e3, "t_window_ms": times[w] * 1e3, "ceiling": ar_nfe / nfe * times[0] / times[w],
                "matches_ar": float((toks == ar_tokens).all(1).float().mean()), "guidance_scale": guidance_scale,
                "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed, "threads": torch.get_num_threads(),
            })  # fmt: skip
    return records


def format_table(records: list[dict[str, Any]]) -> str:
    head = f"{'method':<36} {'b':>2} {'nfe':>7} {'step x':>6} {'wall s':>7} {'speedup':>7} {'ceiling':>7}"
    lines = [f"{head} {'= AR':>5}"]
    for r in records:
        lines.append(
            f"{r['method']:<36} {r['batch_size']:>2} {r['nfe']:>7.1f} {r['step_compression']:>6.2f} "
            f"{r['wall_s']:>7.2f} {r['speedup']:>7.2f} {r['ceiling']:>7.2f} {r['matches_ar']:>5.2f}"
        )
    return "\n".join(lines)


__all__ = ["format_table", "run_family_bench"]
