"""``mmaccel generate image``, ``mmaccel bench image`` and ``mmaccel bench families``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmaccel.cli import with_method_help
from mmaccel.io import check_writable, save_image_atomic, write_json_atomic
from mmaccel.params import split_assignment

#: The names of image/spatial.py's initialisations (pipeline.INITS), kept here so registration imports no torch.
INIT_NAMES = ("random", "horizontal", "horizontal-sample", "vertical")
#: Image formats ``--out`` may name (PIL writes each from the suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _param(text: str) -> tuple[str, str]:
    """``--param name=value``: the value stays text until the method's signature types it."""
    try:
        return split_assignment(text, "--param")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def output_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """The image, its acceptance map and its stats JSON for ``--out``; refused unless they are three files of
    which the image names a supported format, in a writable folder."""
    out = Path(out)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(
            f"--out {str(out)!r} must end in an image extension ({', '.join(IMAGE_SUFFIXES)}); the acceptance map "
            "and the stats JSON are written beside it"
        )
    paths = (out, out.with_name(f"{out.stem}_acceptance{out.suffix}"), out.with_suffix(".json"))
    for path in paths:
        check_writable(path)
    return paths


def grid(images):
    """Tile images in a near-square grid."""
    from PIL import Image

    n = len(images)
    cols = int(n**0.5 + 0.999)
    rows = (n + cols - 1) // cols
    w, h = images[0].size
    canvas = Image.new("RGB", (cols * w, rows * h))
    for i, im in enumerate(images):
        canvas.paste(im, ((i % cols) * w, (i // cols) * h))
    return canvas


def _window(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _class_label(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _generate(args: argparse.Namespace) -> int:
    from mmaccel.data.scenes import CLASS_NAMES
    from mmaccel.methods import check_params

    from .defaults import DEFAULT_METHOD
    from .pipeline import ImageARPipeline

    out, map_path, json_path = output_paths(args.out)
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    if (args.class_id is None) == (args.prompt is None):
        raise ValueError("give exactly one of --class (class-conditional models) and --prompt (text-to-image models)")
    method = args.method or DEFAULT_METHOD
    params = dict(args.param or [])
    if args.window is not None:
        params["window"] = args.window
    params = check_params(method, params)  # a bad method or value fails before anything is loaded
    pipe = ImageARPipeline.from_pretrained(args.model, family=args.family, draft=args.draft)
    names = CLASS_NAMES if args.model is None else ()
    label = None if args.class_id is None else class_index(args.class_id, pipe.num_classes, names)
    result = pipe(
        class_labels=label,
        prompt=args.prompt,
        method=method,
        num_images=args.num_images,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        compile=args.compile,
        **params,
    )
    save_image_atomic(grid(result.images), out)
    save_image_atomic(grid(result.acceptance_maps), map_path)
    write_json_atomic(json_path, result.stats)
    steps = sum(s["steps"] for s in result.stats) / len(result.stats)
    ar = result.stats[0]["ar_steps"]
    print(
        f"{method}: {steps:.1f} steps per image vs {ar} for plain AR ({ar / steps:.2f}x fewer); "
        f"wall {result.stats[0]['batch_wall_s']:.1f} s"
    )
    print(f"wrote {out}, {map_path}, {json_path}")
    return 0


def class_index(value: int | str, num_classes: int | None, names: tuple[str, ...] = ()) -> int:
    """``--class``: an index, or one of ``names`` (the default model's class names); refusals name the flag."""
    if num_classes is None:
        raise ValueError("--class: this model is text-to-image; give --prompt instead")
    if isinstance(value, str):
        if value not in names:
            known = f"one of {', '.join(names)} or " if names else ""
            raise ValueError(
                f"--class {value!r} is not a class of this model; give {known}an index in [0, {num_classes})"
            )
        return names.index(value)
    if not 0 <= value < num_classes:
        raise ValueError(f"--class must be in [0, {num_classes}) for this model, got {value}")
    return value


def _report(table: str, records: list, json_path: str | None) -> int:
    """A bench's last words: its table, and its records written atomically where ``--json`` says."""
    print(table)
    if json_path:
        write_json_atomic(json_path, records)
        print(f"wrote {json_path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run_bench

    if args.json:
        check_writable(Path(args.json))
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    records = run_bench(
        model=args.model,
        methods=args.methods.split(","),
        num_images=args.num_images,
        num_real=args.num_real,
        batch_size=args.batch_size,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        progress=True,
    )
    return _report(format_table(records), records, args.json)


def _csv(text: str, flag: str, cast: type = str) -> tuple:
    """The comma-separated values of ``flag``; a value ``cast`` rejects raises ValueError naming the flag."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return tuple(cast(t) for t in items)
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated {cast.__name__} values, got {text!r}") from None


def _bench_families(args: argparse.Namespace) -> int:
    import torch

    from .bench_families import FamiliesBenchConfig, format_table, run_families

    config = FamiliesBenchConfig(
        families=_csv(args.families, "--families"),
        size=args.size,
        batch_sizes=_csv(args.batch_sizes, "--batch-sizes", int),
        methods=_csv(args.methods, "--methods"),
        max_tokens=args.max_tokens,
        device=args.device,
        dtype=args.dtype,
        guidance_scale=args.guidance_scale,
        window=args.window,
        warmup_tokens=args.warmup_tokens,
        build=args.build,
        seed=args.seed,
    ).validate()
    if args.json:
        check_writable(Path(args.json))
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    # Saving and loading random checkpoints would otherwise print progress bars and load reports between rows.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        records = run_families(config, json_path=args.json)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return _report(format_table(records), records, args.json)


def _bench_engine(args: argparse.Namespace) -> int:
    import torch

    from .bench_engine import format_table, run_engine_bench

    if args.json:
        check_writable(Path(args.json))
    batch_sizes = _csv(args.batch_sizes, "--batch-sizes", int)
    from mmaccel.window import CANDIDATES

    windows = sorted(set(_csv(args.windows, "--windows", int)) | set(CANDIDATES))  # every window auto may run
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"--batch-sizes takes integers >= 1, got {args.batch_sizes!r}")
    if not windows or min(windows) < 1:
        raise ValueError(f"--windows takes integers >= 1, got {args.windows!r}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    records = run_engine_bench(
        methods=list(_csv(args.methods, "--methods")),
        batch_sizes=list(batch_sizes),
        windows=list(windows),
        repeats=args.repeats,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        seed=args.seed,
        progress=True,
        window_cache=args.window_cache,
    )
    return _report(format_table(records), records, args.json)


def _register_engine(bench, defaults: dict) -> None:
    e = bench.add_parser(
        "engine",
        help="seconds, not forwards: the AR loop against a minimal static-cache loop, t(L+1), speed-ups vs ceilings",
    )
    with_method_help(e, INIT_NAMES)
    e.add_argument(
        "--methods",
        default="sjd,mc-sjd,lantern,sjd:window=auto,mc-sjd:window=auto,lantern:window=auto",
        help="comma-separated methods beside AR, each may carry parameters (default: %(default)s)",
    )
    e.add_argument("--batch-sizes", default="1,10", help="comma-separated batch sizes (default: %(default)s)")
    e.add_argument("--windows", default="1,2,4,8,16", help="windows L whose t(L+1) is timed (default: %(default)s)")
    e.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported (default: 3)")
    e.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    e.add_argument(
        "--window-cache",
        action="store_true",
        help="let window=auto read and write its calibration on disk (default: in memory, a cold start)",
    )
    e.add_argument("--json", help="write the records here")
    _sampling(e, defaults)
    e.add_argument(
        "--guidance-scale", type=float, default=None, help=f"guidance scale (default: {defaults['guidance_scale']})"
    )
    e.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default: 0)")
    e.set_defaults(func=_bench_engine)


def _register_families(bench) -> None:
    # Registration stays import-free (see mmaccel.cli._extensions): these names mirror random_models' own lists,
    # which validate the values when the command runs.
    families = "llamagen,llamagen-t2i,janus,chameleon,emu3"
    f = bench.add_parser(
        "families",
        help="engine overhead on every image family at its real size, random weights: AR vs SJD/GSD per batch",
    )
    f.add_argument("--families", default=families, help=f"comma-separated, from {families}")
    f.add_argument(
        "--size", default="small", help="tiny | small | real: tests' size, CPU-sized, released architectures"
    )
    f.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes")
    f.add_argument("--methods", default="ar,sjd,gsd", help="comma-separated: ar, sjd, gsd, lantern, typical, greedy")
    f.add_argument("--max-tokens", type=int, default=None, help="generate at most this many tokens per image")
    f.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    f.add_argument("--dtype", default="float32", help="float32 or bfloat16 (the transformer's weights)")
    f.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance scale")
    f.add_argument("--window", type=int, default=16, help="Jacobi window of the speculative methods")
    f.add_argument("--warmup-tokens", type=int, default=16, help="tokens of the untimed run before each timed one")
    f.add_argument("--build", default="auto", help="auto (disk below real size), disk (save + from_pretrained), direct")
    f.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--json", help="write the records here")
    f.set_defaults(func=_bench_families)


def _common(p: argparse.ArgumentParser, defaults: dict) -> None:
    p.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help=f"classifier-free guidance scale, >= 0; 1 turns guidance off (default: {defaults['guidance_scale']})",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="image i uses seed + i, the same alone or in any batch (default: 0)"
    )


def _sampling(p: argparse.ArgumentParser, defaults: dict) -> None:
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"sampling temperature, >= 0; 0 is greedy decoding (default: {defaults['temperature']})",
    )
    p.add_argument("--top-k", type=int, default=defaults["top_k"], help="sample only among the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=defaults["top_p"], help="nucleus sampling: keep mass p, in (0, 1]")


GENERATE_EXAMPLES = """examples:
  mmaccel generate image --class 3 --out out.png                      # default model, default method
  mmaccel generate image --class star --method sjd --window 8 --num-images 4 --out stars.png
  mmaccel generate image --class 3 --method lantern --param delta=0.2 --param k=64 --out out.jpg
  mmaccel generate image --model ~/ckpts/Janus-Pro-7B --draft ~/ckpts/Janus-Pro-1B \\
      --prompt "a red apple" --method lantern-draft --out apple.png
"""

BENCH_EXAMPLES = """examples:
  mmaccel bench image --methods ar,sjd,gsd --num-images 100 --batch-size 10 --json bench.json
  mmaccel bench image --methods ar,lantern:delta=0.2:k=64,lantern:delta=0.05 --num-images 50 --batch-size 10
"""


def register(commands, generate, bench) -> None:

    from mmaccel.data.scenes import CLASS_NAMES

    from .defaults import DEFAULT_METHOD, DEFAULTS

    g = generate.add_parser(
        "image",
        help="AR image generation (class-conditional or text-to-image)",
        description="Generate images with plain AR sampling or an accelerated method.",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_method_help(g, INIT_NAMES)
    g.add_argument(
        "--class",
        dest="class_id",
        type=_class_label,
        default=None,
        help=f"class index, or for the default model a class name: {', '.join(CLASS_NAMES)} (0-{len(CLASS_NAMES) - 1})",
    )
    g.add_argument("--prompt", default=None, help="text prompt (text-to-image models)")
    g.add_argument(
        "--family", default=None, help="llamagen, llamagen-t2i, janus, anole, chameleon or emu3 (default: recognised)"
    )
    g.add_argument("--draft", default=None, help="draft checkpoint of the same family (for the draft methods)")
    g.add_argument("--method", default=None, help=f"acceleration method, listed below (default: {DEFAULT_METHOD})")
    g.add_argument(
        "--compile",
        action="store_true",
        help="run the step forward under torch.compile (static shapes, CUDA graphs on a GPU; pays off on a GPU)",
    )
    g.add_argument(
        "--window",
        type=_window,
        default=None,
        help="drafts per step, or auto: the fastest window on this machine (default: 16 Jacobi, 4 draft model)",
    )
    g.add_argument(
        "--num-images", type=int, default=1, help="images to generate in one batch, tiled in one file (default: 1)"
    )
    _sampling(g, DEFAULTS)
    g.add_argument(
        "--param", type=_param, action="append", help="a method parameter, name=value (repeatable; listed below)"
    )
    g.add_argument(
        "--out",
        required=True,
        help=f"output image ({', '.join(IMAGE_SUFFIXES)}); OUT_acceptance.EXT and OUT.json (stats) go beside it",
    )
    _common(g, DEFAULTS)
    g.set_defaults(func=_generate)

    b = bench.add_parser(
        "image",
        help="every method side by side: speed, FID and class accuracy",
        epilog=BENCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_method_help(b, INIT_NAMES)
    b.add_argument(
        "--methods",
        default="ar,sjd,gsd,lantern,lantern-draft,lantern++,draft",
        help="comma-separated; a method may carry parameters, e.g. lantern-draft:delta=0.2:k=30 (default: %(default)s)",
    )
    b.add_argument(
        "--num-images", type=int, default=100, help="images per method; FID needs >= 50 to mean much (default: 100)"
    )
    b.add_argument("--num-real", type=int, default=5000, help="real images for the FID reference (default: 5000)")
    b.add_argument("--batch-size", type=int, default=50, help="images generated together (default: 50)")
    b.add_argument("--json", help="write the records here")
    _sampling(b, DEFAULTS)
    _common(b, DEFAULTS)
    b.set_defaults(func=_bench)

    _register_families(bench)
    _register_engine(bench, DEFAULTS)


__all__ = ["register"]
