"""``mmaccel bench video --family emu3|cosmos --model DIR``: core methods on a real video family, side by side.

Every method runs on the same conditions and seeds in this process; speed is quoted as ratios to the AR run at
each batch size: ``step_compression`` (AR forwards / forwards), ``speedup`` (AR wall / wall), next to the ceiling
(step compression x t(1)/t(L+1), t measured here). ``matches_ar`` is the share of clips token-identical to AR's
(1.0 for a lossless method under greedy decoding, ``--temperature 0``). There is no quality field: the domain
classifier and FVD belong to the default model's clips, and no real-family reference clips are available here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmaccel.bench.timing import forward_times
from mmaccel.methods import DEFAULT_WINDOW, method, parse_method
from mmaccel.sampling import SamplingConfig

#: Emu3 prompts when ``--prompt`` is not given (clip ``i`` takes prompt ``i`` modulo their number).
DEFAULT_PROMPTS = ("a red ball rolls to the left", "a blue cube spins slowly", "waves on a beach at sunset")


def default_conditions(family: Any, count: int, seed: int) -> list:
    """Emu3: :data:`DEFAULT_PROMPTS`; Cosmos: one latent frame of uniformly drawn token ids per clip (seeded)."""
    if family.name == "emu3":
        return [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(count)]
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(family.model.vocab_size, (count, family.frame_tokens), generator=gen).tolist()


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
) -> list[dict[str, Any]]:
    """One record per (method, batch size); ``conditions`` holds one prompt or token row per clip."""
    sampling = SamplingConfig(temperature)
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
                seeds = [seed + start + i for i in range(prompt.ids.shape[0])]
                out = decoder.generate(prompt, family.num_tokens(prompt), seeds=seeds, progress=progress)
                tokens.append(out.tokens.cpu())
                steps += out.stats.steps_per_sample.tolist()
                wall += out.stats.wall_s
            runs.append((spec, torch.cat(tokens), float(np.mean(steps)), wall))
        prompt = family.timing_prompt(b)
        n = family.num_tokens(prompt)
        windows = sorted({_window(spec) for spec in methods})
        times = forward_times(family.guided_model(guidance_scale), prompt, windows, prompt.ids.shape[1] + n // 2)
        _, ar_tokens, ar_nfe, ar_wall = runs[0]
        for spec, toks, nfe, wall in runs:
            w = _window(spec)
            records.append({
                "method": spec, "family": family.name, "batch_size": b, "window": w, "num_videos": len(conditions),
                "tokens": n, "nfe": nfe, "step_compression": ar_nfe / nfe, "wall_s": wall, "speedup": ar_wall / wall,
                "t1_ms": times[0] * 1e3, "t_window_ms": times[w] * 1e3, "ceiling": ar_nfe / nfe * times[0] / times[w],
                "matches_ar": float((toks == ar_tokens).all(1).float().mean()), "guidance_scale": guidance_scale,
                "temperature": temperature, "seed": seed, "threads": torch.get_num_threads(),
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


__all__ = ["DEFAULT_PROMPTS", "default_conditions", "format_table", "run_family_bench"]
