"""``mmaccel bench engine``: what the engine costs in seconds on the default image model, side by side.

In one process, on the same classes and seeds, interleaved and repeated (medians):

* the engine's plain AR loop against a minimal static-cache loop written here in gpt-fast's shape (contiguous
  KV buffers written by slicing at one shared position, no engine, no wrappers; same weights, same guidance,
  same sampling arithmetic): the baseline every speed-up is quoted against must itself be fast;
* ``t(L+1)``, one guided verify forward of ``L + 1`` new tokens per sample in the middle of an image, for each
  window ``L`` (``t(1)`` is an AR step);
* each method's wall-clock speed-up over the AR loop beside its ceiling, ``AR forwards / sum over its forwards
  of t(L+1) / t(1)`` with ``L`` the window each forward verified: no decoder that runs those forwards can beat it.
  At a fixed window this is ``batch step compression x t(1) / t(L+1)`` (the prompt's forward counted at t(1));
  with ``window=auto`` each step's own window counts.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from mmaccel.methods import parse_method
from mmaccel.models import CFGModel
from mmaccel.sampling import SamplingConfig, sample, target_probs

from .defaults import DEFAULTS
from .pipeline import ImageARPipeline


class StaticCache:
    """gpt-fast's KV cache: ``[B, H, S, D]`` buffers written by slicing at one position shared by the batch.

    Quacks like :class:`~mmaccel.models.SlotCache` for :meth:`LlamaGenGPT.run`; only a loop whose rows all sit
    at the same position (AR from equal-length prompts) may use it.
    """

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.position = 0
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self._open: torch.Tensor | None = None

    def set_positions(self, positions: torch.Tensor) -> None:
        pass  # the loop sets `position` itself: no host sync

    def update(self, k: torch.Tensor, v: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if layer not in self.keys:
            b, h, _, d = k.shape
            self.keys[layer] = k.new_zeros(b, h, self.max_length, d)
            self.values[layer] = v.new_zeros(b, h, self.max_length, v.shape[-1])
        end = self.position + k.shape[2]
        self.keys[layer][:, :, self.position : end] = k
        self.values[layer][:, :, self.position : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def attention_mask(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # One query sees every written slot: an all-zero mask (a view, never rebuilt).
        if self._open is None:
            self._open = torch.zeros(1, 1, 1, self.max_length, dtype=dtype, device=positions.device)
        return self._open[..., : self.position + 1]


@torch.no_grad()
def minimal_ar(pipe: ImageARPipeline, labels: list[int], seed: int, guidance: float, temperature: float) -> float:
    """Seconds for a minimal guided AR loop over ``labels`` (one image each), gpt-fast style."""
    gpt = pipe.model.gpt
    config = gpt.config
    n, cls = pipe.num_tokens, config.cls_token_num
    if cls != 1:
        raise ValueError("the minimal loop drives one-token class prompts (cls_token_num 1) only")
    device = pipe.device
    gen = torch.Generator(device=device).manual_seed(seed)
    sampling = SamplingConfig(temperature)
    start = time.perf_counter()
    batch = len(labels)
    rows = torch.tensor(labels + [config.num_classes] * batch, device=device)  # cond rows, then the null class
    cache = StaticCache(1 + n)
    x = gpt.cls_embedding(rows)[:, None]
    for step in range(n):  # step 0 forwards the class token; step s the image token at position s
        cache.position = step
        positions = torch.full((2 * batch, 1), step, device=device)
        logits = gpt.output(gpt.run(x, positions, cache)[:, -1]).float()
        cond, uncond = logits.chunk(2)
        p = target_probs(uncond + guidance * (cond - uncond), sampling)
        token = sample(p, torch.rand(batch, generator=gen, device=device))
        x = gpt.tok_embeddings(torch.cat([token, token]))[:, None]
    return time.perf_counter() - start


def verify_cost(pipe: ImageARPipeline, batch: int, windows: list[int], guidance: float, repeats: int) -> dict:
    """Median seconds of one guided forward of ``L + 1`` new tokens per sample, mid-image, for each ``L``."""
    model = CFGModel(pipe.model, guidance)
    prompt = pipe.family.prompt(class_labels=[i % pipe.num_classes for i in range(batch)])
    context = pipe.num_tokens // 2
    longest = max(windows) + 1
    cache = model.new_cache(batch, context + longest + 2)
    model.prefill(prompt, cache)
    cls = prompt.lengths.to(pipe.device)[:, None]
    tokens = torch.randint(pipe.model.vocab_size, (batch, context), generator=torch.Generator().manual_seed(0))
    model.forward(tokens.to(pipe.device), cls + torch.arange(context, device=pipe.device), cache)
    costs: dict[int, list[float]] = {length: [] for length in [0, *windows]}
    for _ in range(repeats):
        for length in costs:  # interleaved, so drift hits every window alike
            new = tokens[:, : length + 1].to(pipe.device)
            positions = cls + context + torch.arange(length + 1, device=pipe.device)
            start = time.perf_counter()
            model.forward(new, positions, cache)
            costs[length].append(time.perf_counter() - start)
    return {length + 1: statistics.median(times) for length, times in costs.items()}


def run_engine_bench(
    methods: list[str],
    batch_sizes: list[int],
    windows: list[int],
    repeats: int = 3,
    guidance_scale: float | None = None,
    temperature: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One record per (batch size, method), plus the minimal loop's; see the module docstring."""
    from tqdm.auto import tqdm

    for spec in methods:
        parse_method(spec)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    guidance = DEFAULTS["guidance_scale"] if guidance_scale is None else guidance_scale
    temperature = DEFAULTS["temperature"] if temperature is None else temperature
    pipe = ImageARPipeline.from_pretrained()
    sampling = SamplingConfig(temperature)
    records: list[dict[str, Any]] = []
    runs = ["minimal", "ar", *[m for m in methods if m != "ar"]]
    bar = tqdm(total=len(batch_sizes) * repeats * len(runs), desc="engine bench", disable=not progress)
    for batch in batch_sizes:
        labels = [i % pipe.num_classes for i in range(batch)]
        seeds = [seed + i for i in range(batch)]
        prompt = pipe.family.prompt(class_labels=labels)
        cost = verify_cost(pipe, batch, windows, guidance, max(5, 3 * repeats))
        walls: dict[str, list[float]] = {name: [] for name in runs}
        nfe: dict[str, int] = {}
        used: dict[str, list[int]] = {}
        steps: dict[str, float] = {}
        window: dict[str, int | None] = {}
        minimal_ar(pipe, labels, seed, guidance, temperature)  # warm-up: first calls allocate
        for _ in range(repeats):
            for name in runs:
                if name == "minimal":
                    walls[name].append(minimal_ar(pipe, labels, seed, guidance, temperature))
                else:
                    spec, params = parse_method(name)
                    decoder = pipe.build_decoder(spec, sampling, guidance, **params)
                    out = decoder.generate(prompt, pipe.num_tokens, seeds=seeds)
                    walls[name].append(out.stats.wall_s)
                    nfe[name] = out.stats.nfe
                    steps[name] = float(out.stats.steps_per_sample.float().mean())
                    window[name] = decoder.window or None
                    used[name] = out.stats.windows
                bar.update(1)
        ar_wall = statistics.median(walls["ar"])
        for name in runs:
            wall = statistics.median(walls[name])
            record: dict[str, Any] = {
                "method": name,
                "batch_size": batch,
                "wall_s": wall,
                "speedup": ar_wall / wall,
                "guidance_scale": guidance,
                "temperature": temperature,
                "repeats": repeats,
            }
            if name != "minimal":
                compression = nfe["ar"] / nfe[name]
                ceiling = None
                if all(w + 1 in cost for w in used[name]):
                    ceiling = nfe["ar"] / (1 + sum(cost[w + 1] / cost[1] for w in used[name]))
                record.update(
                    window=window[name],
                    windows_used=sorted(set(used[name])),
                    mean_window=sum(used[name]) / max(1, len(used[name])),
                    nfe=nfe[name],
                    step_compression=compression,
                    mean_steps_per_sample=steps[name],
                    t1_s=cost[1],
                    ceiling=ceiling,
                )
                record["share_of_ceiling"] = None if ceiling is None else record["speedup"] / ceiling
            records.append(record)
        records.append(
            {
                "method": "verify_cost",
                "batch_size": batch,
                "t_s": {str(k): v for k, v in cost.items()},
                "ratio_to_t1": {str(k): v / cost[1] for k, v in cost.items()},
            }
        )
    bar.close()
    return records


def format_table(records: list[dict[str, Any]]) -> str:
    lines = []
    for r in records:
        if r["method"] == "verify_cost":
            costs = ", ".join(f"t({k}) = {v:.2f}x" for k, v in r["ratio_to_t1"].items())
            lines.append(f"batch {r['batch_size']}: t(1) = {r['t_s']['1'] * 1e3:.2f} ms; {costs}")
            lines.append("")
            continue
        if r["method"] == "minimal":
            lines.append(
                f"batch {r['batch_size']}: minimal static-cache AR loop {r['wall_s']:.2f} s; the engine's AR loop "
                f"is {1 / r['speedup']:.3f}x its time"
            )
            lines.append(
                f"{'method':<22} {'window':>7} {'step x':>7} {'wall s':>7} {'speedup':>8} {'ceiling':>8} {'share':>6}"
            )
            continue
        ceiling = "-" if r["ceiling"] is None else f"{r['ceiling']:.2f}"
        share = "-" if r["share_of_ceiling"] is None else f"{r['share_of_ceiling']:.0%}"
        shown = "-" if not r["window"] else f"{r['mean_window']:.1f}"
        lines.append(
            f"{r['method']:<22} {shown:>7} {r['step_compression']:>7.2f} {r['wall_s']:>7.2f} "
            f"{r['speedup']:>8.2f} {ceiling:>8} {share:>6}"
        )
    return "\n".join(lines)
