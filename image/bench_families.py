"""``mmaccel bench families``: the engine's cost on every image family at its real size, with random weights.

Each family (:mod:`mmaccel.image.testing.random_models`) runs plain AR and the requested speculative methods at each
batch size on the same prompts and seeds. Random weights say nothing about acceptance, so step compression is
only what these random distributions give; what the rows do show is the engine's overhead at the family's real
shapes: milliseconds per forward for one token (AR) against a window of tokens (SJD, GSD), per-token latency,
and how both grow with the batch.

Per (family, method, batch) a record holds: tokens generated per image, forwards of the target model (``nfe``,
the prompt's prefill included, so plain AR has ``nfe == tokens``), ``step_compression`` (AR's forwards /
these forwards), wall seconds, per-token latency (wall / tokens per image), milliseconds per forward, and the
device, dtype and parameter counts. Guidance is on (both rows run), as every family samples with CFG. Only
generation is timed: prompt encoding comes before, and images are not decoded. Each configuration runs once
untimed first (``warmup_tokens`` tokens) so lazy initialisation, kernel selection and the allocator's first
requests stay out of the timed run. On CUDA the clock reads after ``torch.cuda.synchronize()``.

``tiny`` and ``small`` models are saved to a temporary folder and loaded through
:meth:`ImageARPipeline.from_pretrained <mmaccel.image.pipeline.ImageARPipeline.from_pretrained>`, the loading
path real checkpoints take. ``real`` models (0.8B to 8.5B parameters) are built directly on the device in the
requested dtype: writing and re-reading up to 17 GB of random weights would time the disk, and loading goes
through the CPU.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmaccel.io import write_json_atomic
from mmaccel.methods import DEFAULT_WINDOW, METHODS
from mmaccel.sampling import SamplingConfig

from .pipeline import ImageARPipeline
from .testing.random_models import (
    FAMILY_NAMES,
    REAL_MODELS,
    SIZES,
    build_family,
    cast_family,
    check_family,
    check_size,
    conditions,
    count_parameters,
    folder_name,
    save_family,
)

#: Methods a random family can run: plain AR and the training-free (Jacobi-drafted) ones; none has a draft model.
BENCH_METHODS = tuple(m for m, spec in METHODS.items() if spec.drafter in (None, "jacobi"))
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
BUILDS = ("auto", "disk", "direct")


@dataclass(frozen=True)
class FamiliesBenchConfig:
    """What ``mmaccel bench families`` runs; :meth:`validate` names the offending parameter on bad input."""

    families: tuple[str, ...] = FAMILY_NAMES
    size: str = "small"
    batch_sizes: tuple[int, ...] = (1, 8)
    methods: tuple[str, ...] = ("ar", "sjd", "gsd")
    max_tokens: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    guidance_scale: float = 2.0
    window: int = DEFAULT_WINDOW["jacobi"]
    warmup_tokens: int = 16
    build: str = "auto"
    seed: int = 0

    def validate(self) -> FamiliesBenchConfig:
        """``self`` when every field is usable; otherwise a ValueError that names the CLI flag at fault."""
        if not self.families:
            raise ValueError("--families must name at least one family")
        for name in self.families:
            try:
                check_family(name)
            except ValueError as err:
                raise ValueError(f"--families: {err}") from None
        try:
            check_size(self.size)
        except ValueError as err:
            raise ValueError(f"--size: {err}") from None
        if not self.methods:
            raise ValueError("--methods must name at least one method")
        for method in self.methods:
            if method not in METHODS:
                raise ValueError(f"--methods: unknown method {method!r}; choose from {list(BENCH_METHODS)}")
            if method not in BENCH_METHODS:
                raise ValueError(
                    f"--methods: {method!r} needs a draft model, which random families do not have; "
                    f"choose from {list(BENCH_METHODS)}"
                )
        if not self.batch_sizes:
            raise ValueError("--batch-sizes must hold at least one batch size")
        for b in self.batch_sizes:
            if b < 1:
                raise ValueError(f"--batch-sizes: every batch size must be >= 1, got {b}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be >= 1, got {self.max_tokens}")
        if self.warmup_tokens < 1:
            raise ValueError(f"--warmup-tokens must be >= 1, got {self.warmup_tokens}")
        if self.window < 1:
            raise ValueError(f"--window must be >= 1, got {self.window}")
        if self.guidance_scale < 0:
            raise ValueError(f"--guidance-scale must be >= 0, got {self.guidance_scale}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype: unknown dtype {self.dtype!r}; choose one of {list(DTYPES)}")
        if self.build not in BUILDS:
            raise ValueError(f"--build: unknown build {self.build!r}; choose one of {list(BUILDS)}")
        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"--device: {err}") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda[:N], got {self.device!r}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device!r}: CUDA is not available on this machine")
        return self

    @property
    def resolved_build(self) -> str:
        """``disk`` (save, then load through the pipeline) or ``direct``; ``auto`` is direct at real size only."""
        if self.build != "auto":
            return self.build
        return "direct" if self.size == "real" else "disk"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def load_random_pipeline(name: str, config: FamiliesBenchConfig, workdir: Path) -> tuple[ImageARPipeline, float]:
    """The random ``name`` family as a pipeline on the bench's device and dtype, and the seconds it took."""
    device, dtype = torch.device(config.device), DTYPES[config.dtype]
    start = time.perf_counter()
    if config.resolved_build == "direct":
        family = build_family(name, config.size, device, dtype, seed=config.seed)
    else:
        # Built where it will run, so a forced disk build at real size never holds float32 copies in CPU memory.
        built = build_family(name, config.size, device, dtype, seed=config.seed)
        folder = save_family(built, workdir / folder_name(name, config.size))
        del built
        family = ImageARPipeline.from_pretrained(folder, device, family=name).family
        cast_family(family, dtype)  # LlamaGen's loader reads weights as float32
        # The checkpoint has served its purpose; keeping every family's would fill the disk at real size.
        shutil.rmtree(folder)
        family.cache_dir = None
    _sync(device)
    return ImageARPipeline(family), time.perf_counter() - start


def _prompt_tokens(prompt: Any) -> int:
    return int(prompt.lengths.max())


def _count(n: int) -> str:
    """A parameter count in K, M or B."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def time_generation(pipe: ImageARPipeline, method: str, batch_size: int, config: FamiliesBenchConfig) -> dict[str, Any]:
    """One warm-up and one timed generation of ``method`` at ``batch_size``; the record's measured fields."""
    device = torch.device(config.device)
    family = pipe.family
    tokens = family.layout.num_tokens if config.max_tokens is None else min(config.max_tokens, family.layout.num_tokens)
    params = {} if METHODS[method].drafter is None else {"window": config.window}
    prompt = family.prompt(**conditions(family, batch_size))
    seeds = [config.seed + i for i in range(batch_size)]
    decoder = pipe.build_decoder(method, SamplingConfig(), config.guidance_scale, **params)
    warmup = min(tokens, config.warmup_tokens)
    decoder.generate(prompt, warmup, seeds=seeds)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    out = decoder.generate(prompt, tokens, seeds=seeds)
    _sync(device)
    wall = time.perf_counter() - start
    nfe = out.stats.nfe
    return {
        "tokens": tokens,
        "nfe": nfe,
        "steps_per_image": float(out.stats.steps_per_sample.float().mean()),
        # Plain AR needs exactly one forward per token (the prefill gives the first), so tokens / nfe is the
        # compression against AR without needing an AR row.
        "step_compression": tokens / nfe,
        "wall_s": wall,
        "per_token_ms": 1000 * wall / tokens,
        "ms_per_forward": 1000 * wall / nfe,
        "tokens_per_s": batch_size * tokens / wall,
        "warmup_tokens": warmup,
        "prompt_tokens": _prompt_tokens(prompt),
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def run_families(
    config: FamiliesBenchConfig, json_path: str | Path | None = None, log: Any = print
) -> list[dict[str, Any]]:
    """Every (family, batch size, method) of ``config``; records in that order, AR first within a batch.

    With ``json_path`` the records so far are rewritten (atomically) after each family, so a failure at real
    size keeps the families already measured. A configuration that runs out of GPU memory gets a record with
    ``error`` and the rest go on.
    """
    config.validate()
    device = torch.device(config.device)
    methods = ["ar", *[m for m in config.methods if m != "ar"]] if "ar" in config.methods else list(config.methods)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mmaccel-bench-families-") as tmp:
        for name in config.families:
            pipe, load_s = load_random_pipeline(name, config, Path(tmp))
            params, lm_params = count_parameters(pipe.family)
            layout = pipe.family.layout
            common = {
                "family": name,
                "model": REAL_MODELS[name] if config.size == "real" else f"{REAL_MODELS[name]} shape, {config.size}",
                "size": config.size,
                "build": config.resolved_build,
                "load_s": load_s,
                "device": _device_name(device),
                "dtype": config.dtype,
                "params": params,
                "lm_params": lm_params,
                "grid": list(layout.grid),
                "row_end": layout.row_end is not None,
                "image_tokens": layout.num_tokens,
                "vocab": pipe.model.vocab_size,
                "guidance_scale": config.guidance_scale,
                "torch": torch.__version__,
            }
            log(
                f"{name}: {_count(params)} parameters ({_count(lm_params)} per step), grid {layout.grid}, "
                f"{layout.num_tokens} tokens/image, {config.resolved_build} build in {load_s:.1f} s"
            )
            for batch_size in config.batch_sizes:
                ar_wall = None
                for method in methods:
                    record = {**common, "method": method, "batch_size": batch_size}
                    record["window"] = None if METHODS[method].drafter is None else config.window
                    try:
                        record.update(time_generation(pipe, method, batch_size, config))
                    except torch.cuda.OutOfMemoryError as err:
                        record["error"] = f"out of memory: {str(err).splitlines()[0]}"
                        torch.cuda.empty_cache()
                        log(f"  {method} batch {batch_size}: {record['error']}")
                        records.append(record)
                        continue
                    if method == "ar":
                        ar_wall = record["wall_s"]
                    record["speedup_vs_ar"] = ar_wall / record["wall_s"] if ar_wall is not None else None
                    records.append(record)
                    log(
                        f"  {method:<8} batch {batch_size}: {record['tokens']} tokens in {record['nfe']} forwards, "
                        f"{record['wall_s']:.2f} s"
                    )
            del pipe
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if json_path is not None:
                write_json_atomic(json_path, records)
    return records


def format_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table of ``records`` (one line per family, method and batch size)."""
    header = (
        f"{'family':<13} {'LM par.':>8} {'method':<7} {'batch':>5} {'tokens':>6} {'nfe':>5} {'step x':>6} "
        f"{'wall s':>8} {'ms/token':>9} {'ms/fwd':>8} {'vs AR':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        head = f"{r['family']:<13} {_count(r['lm_params']):>8} {r['method']:<7} {r['batch_size']:>5}"
        if "error" in r:
            lines.append(f"{head}  {r['error']}")
            continue
        speedup = f"{r['speedup_vs_ar']:>6.2f}" if r.get("speedup_vs_ar") is not None else f"{'-':>6}"
        lines.append(
            f"{head} {r['tokens']:>6} {r['nfe']:>5} {r['step_compression']:>6.2f} {r['wall_s']:>8.2f} "
            f"{r['per_token_ms']:>9.2f} {r['ms_per_forward']:>8.2f} {speedup}"
        )
    if records:
        first = records[0]
        lines.append(f"device {first['device']}, dtype {first['dtype']}, size {first['size']}, build {first['build']}")
    return "\n".join(lines)


__all__ = [
    "BENCH_METHODS",
    "DTYPES",
    "SIZES",
    "FamiliesBenchConfig",
    "format_table",
    "load_random_pipeline",
    "run_families",
    "time_generation",
]
