"""``mmaccel bench engine``: what the engine costs in seconds on the default image model, side by side.

In one process, on the same classes and seeds, interleaved and repeated (medians):

* the engine's plain AR loop against a minimal static-cache loop written here in gpt-fast's shape (contiguous
  KV buffers written by slicing at one shared position, no engine, no wrappers; same weights, same guidance,
  same sampling arithmetic): the baseline every speed-up is quoted against must itself be fast;
* ``t(L+1)``, one guided verify forward of ``L + 1`` new tokens per sample in the middle of an image, for each
  window ``L`` (``t(1)`` is an AR step);
* each method's wall-clock speed-up over the AR loop beside its ceiling, ``AR forwards / (sum over its forwards
  of t(L+1) / t(1) + draft seconds / t(1))`` with ``L`` the window each forward verified: no decoder that runs
  those forwards can beat it. At a fixed window this is ``batch step compression x t(1) / (t(L+1) + n_draft x
  t_draft)`` (the prompt's forward counted at t(1)); with ``window=auto`` each step's own window counts.
  ``t_draft`` (``t_draft_s``) is one draft forward of a drafter that runs its own model (a draft model, EAGLE's
  head): the drafter's own time (its begin, proposals and updates, with their sampling) in one extra instrumented
  run, over its draft forwards; ``n_draft`` (``draft_forwards_per_step``) is draft forwards per verify forward.
  ``ceiling_verify_only`` leaves the drafter's time out. Jacobi drafters run no forwards of their own.

``wall_s`` is the median over repeats, ``cpu_s`` the same runs' process CPU time (``cpu_speedup``: steadier than
wall time on a shared machine, and the same where the process has the cores to itself). With ``window=auto`` the
first repeat starts cold (the bench keeps what ``auto`` learns in memory only, unless ``window_cache``):
``cold_speedup`` is that run's, ``calibration_s`` its cost-table measurement.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager
from typing import Any

import torch

from mmaccel.drafting.dynamic_tree import candidates
from mmaccel.methods import parse_method
from mmaccel.models import CFGModel
from mmaccel.sampling import SamplingConfig, sample, target_probs
from mmaccel.window import CACHE_ENV

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
    longest = max(windows, default=0) + 1
    cache = model.new_cache(batch, context + longest + 2)
    model.prefill(prompt, cache)
    cls = prompt.lengths.to(pipe.device)[:, None]
    # as many filler tokens as the longest forward holds: a tree's nodes may outnumber the context
    tokens = torch.randint(
        pipe.model.vocab_size, (batch, max(context, longest)), generator=torch.Generator().manual_seed(0)
    )
    model.forward(tokens[:, :context].to(pipe.device), cls + torch.arange(context, device=pipe.device), cache)
    costs: dict[int, list[float]] = {length: [] for length in [0, *windows]}
    for _ in range(repeats):
        for length in costs:  # interleaved, so drift hits every window alike
            new = tokens[:, : length + 1].to(pipe.device)
            positions = cls + context + torch.arange(length + 1, device=pipe.device)
            start = time.perf_counter()
            model.forward(new, positions, cache)
            costs[length].append(time.perf_counter() - start)
    return {length + 1: statistics.median(times) for length, times in costs.items()}


def verified_drafts(drafter, window: int) -> int:
    """The draft tokens one verify forward holds when ``drafter`` runs at ``window`` (0: an AR step): the window
    for a chain; for a tree drafter its nodes (a dynamic tree: its node budget, at most the candidates it grows)."""
    tree = getattr(drafter, "tree", None)
    if not window or tree is None:
        return window
    budget = getattr(drafter, "budget", None)
    return tree.nodes if budget is None else min(budget, candidates(tree))


def timed_windows(windows: list[int], decoders: list) -> list[int]:
    """The ``L`` whose ``t(L+1)`` the bench times: ``windows`` and, for each decoder, every forward it may run
    (its window, the windows ``auto`` chooses among, a tree's nodes), so that every method has its ceiling."""
    lengths = set(windows)
    for decoder in decoders:
        if decoder.drafter is None:
            continue
        auto = decoder.auto_window
        runs = auto.windows if auto is not None else [decoder.drafter.window]
        lengths.update(verified_drafts(decoder.drafter, w) for w in runs)
    return sorted(lengths - {0})


#: The drafter methods whose time is the drafter's own cost (the rest is the engine's and the verify's).
DRAFTER_CALLS = ("begin", "propose", "update", "keep_path", "resize", "reorder")


def drafter_seconds(decoder, prompt, num_tokens: int, seeds: list[int]) -> tuple[float, int]:
    """Seconds inside ``decoder``'s drafter and its draft forwards in one generation (timers wrapped around
    :data:`DRAFTER_CALLS` on the instance, removed afterwards)."""
    drafter, spent = decoder.drafter, [0.0]

    def timed(fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        return call

    names = [n for n in DRAFTER_CALLS if hasattr(drafter, n)]
    for name in names:
        setattr(drafter, name, timed(getattr(drafter, name)))
    try:
        out = decoder.generate(prompt, num_tokens, seeds=seeds)
    finally:
        for name in names:
            delattr(drafter, name)
    return spent[0], out.stats.draft_nfe


@contextmanager
def window_persistence(on: bool):
    """Keep ``window=auto``'s calibration on disk (``on``) or, for a cold start per bench process, in memory."""
    previous = os.environ.get(CACHE_ENV)
    if not on:
        os.environ[CACHE_ENV] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = previous


def run_engine_bench(
    methods: list[str],
    batch_sizes: list[int],
    windows: list[int],
    repeats: int = 3,
    guidance_scale: float | None = None,
    temperature: float | None = None,
    seed: int = 0,
    progress: bool = False,
    window_cache: bool = False,
) -> list[dict[str, Any]]:
    """One record per (batch size, method), plus the minimal loop's; see the module docstring."""
    with window_persistence(window_cache):
        return _run(methods, batch_sizes, windows, repeats, guidance_scale, temperature, seed, progress)


def _run(methods, batch_sizes, windows, repeats, guidance_scale, temperature, seed, progress) -> list[dict[str, Any]]:
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

    def build(name: str):
        spec, params = parse_method(name)
        return pipe.build_decoder(spec, sampling, guidance, **params)

    windows = timed_windows(windows, [build(name) for name in runs[1:]])
    bar = tqdm(total=len(batch_sizes) * repeats * len(runs), desc="engine bench", disable=not progress)
    for batch in batch_sizes:
        labels = [i % pipe.num_classes for i in range(batch)]
        seeds = [seed + i for i in range(batch)]
        prompt = pipe.family.prompt(class_labels=labels)
        cost = verify_cost(pipe, batch, windows, guidance, max(5, 3 * repeats))
        walls: dict[str, list[float]] = {name: [] for name in runs}
        cpus: dict[str, list[float]] = {name: [] for name in runs}
        calibration: dict[str, float] = {}
        draft_nfe: dict[str, int] = {}
        nfe: dict[str, int] = {}
        used: dict[str, list[int]] = {}
        repeat_windows: dict[str, list[float]] = {}  # per repeat, the mean window it ran (auto moves between them)
        verified: dict[str, list[int]] = {}  # per step, the drafts its forward held (a tree's nodes)
        steps: dict[str, float] = {}
        window: dict[str, int | None] = {}
        minimal_ar(pipe, labels, seed, guidance, temperature)  # warm-up: first calls allocate
        for _ in range(repeats):
            for name in runs:
                cpu = time.process_time()
                if name == "minimal":
                    walls[name].append(minimal_ar(pipe, labels, seed, guidance, temperature))
                else:
                    decoder = build(name)
                    out = decoder.generate(prompt, pipe.num_tokens, seeds=seeds)
                    walls[name].append(out.stats.wall_s)
                    calibration.setdefault(name, out.stats.calibration_s)  # the first (cold) run's
                    nfe[name] = out.stats.nfe
                    draft_nfe[name] = out.stats.draft_nfe
                    steps[name] = float(out.stats.steps_per_sample.float().mean())
                    window[name] = decoder.window or None
                    used[name] = out.stats.windows
                    repeat_windows.setdefault(name, []).append(sum(used[name]) / max(1, len(used[name])))
                    verified[name] = [verified_drafts(decoder.drafter, w) for w in used[name]]
                cpus[name].append(time.process_time() - cpu)
                bar.update(1)
        draft_s: dict[str, float] = {}
        for name in runs:  # one instrumented run per drafter that runs forwards of its own
            if draft_nfe.get(name):
                decoder = build(name)
                seconds, forwards = drafter_seconds(decoder, prompt, pipe.num_tokens, seeds)
                draft_s[name] = seconds / max(1, forwards)
        ar_wall, ar_cpu = statistics.median(walls["ar"]), statistics.median(cpus["ar"])
        for name in runs:
            wall = statistics.median(walls[name])
            record: dict[str, Any] = {
                "method": name,
                "batch_size": batch,
                "wall_s": wall,
                "speedup": ar_wall / wall,
                "cpu_s": statistics.median(cpus[name]),
                "cpu_speedup": ar_cpu / statistics.median(cpus[name]),
                "cold_speedup": walls["ar"][0] / walls[name][0],
                "walls_s": walls[name],  # per repeat, in run order: what the median hides (auto's exploring runs)
                "guidance_scale": guidance,
                "temperature": temperature,
                "repeats": repeats,
            }
            if name != "minimal":
                compression = nfe["ar"] / nfe[name]
                ceiling = verify_only = None
                t_draft = draft_s.get(name)
                if all(w + 1 in cost for w in verified[name]):
                    verify = 1 + sum(cost[w + 1] / cost[1] for w in verified[name])
                    drafting = 0.0 if t_draft is None else draft_nfe[name] * t_draft / cost[1]
                    verify_only, ceiling = nfe["ar"] / verify, nfe["ar"] / (verify + drafting)
                record.update(
                    calibration_s=calibration[name],
                    t_draft_s=t_draft,
                    draft_forwards_per_step=draft_nfe[name] / max(1, nfe[name] - 1),
                    ceiling_verify_only=verify_only,
                    window=window[name],
                    windows_used=sorted(set(used[name])),
                    mean_window=sum(used[name]) / max(1, len(used[name])),
                    mean_window_per_repeat=repeat_windows[name],
                    verified_drafts=sorted(set(verified[name])),
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
                f"takes {r['speedup']:.3f}x its time"
            )
            lines.append(
                f"{'method':<22} {'window':>7} {'step x':>7} {'wall s':>7} {'speedup':>8} {'cpu x':>6} "
                f"{'ceiling':>8} {'share':>6} {'t_draft ms':>10}"
            )
            continue
        ceiling = "-" if r["ceiling"] is None else f"{r['ceiling']:.2f}"
        share = "-" if r["share_of_ceiling"] is None else f"{r['share_of_ceiling']:.0%}"
        shown = "-" if not r["window"] else f"{r['mean_window']:.1f}"
        draft = "-" if r["t_draft_s"] is None else f"{r['t_draft_s'] * 1e3:.2f}"
        lines.append(
            f"{r['method']:<22} {shown:>7} {r['step_compression']:>7.2f} {r['wall_s']:>7.2f} "
            f"{r['speedup']:>8.2f} {r['cpu_speedup']:>6.2f} {ceiling:>8} {share:>6} {draft:>10}"
        )
    return "\n".join(lines)
