"""``mmaccel generate image`` and ``mmaccel bench image``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmaccel.io import check_writable, save_image_atomic, write_json_atomic


def _param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"method parameters look like name=value, got {text!r}")
    name, value = text.split("=", 1)
    for cast in (int, float):
        try:
            return name, cast(value)
        except ValueError:
            pass
    return name, value


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


def _generate(args: argparse.Namespace) -> int:
    from .pipeline import ImageARPipeline, method_parameters

    out = Path(args.out)
    check_writable(out)
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    if (args.class_id is None) == (args.prompt is None):
        raise ValueError("give exactly one of --class (class-conditional models) and --prompt (text-to-image models)")
    params = dict(args.param or [])
    method_parameters(args.method)  # unknown method: fail before loading anything
    pipe = ImageARPipeline.from_pretrained(args.model, family=args.family)
    result = pipe(
        class_labels=args.class_id,
        prompt=args.prompt,
        method=args.method,
        num_images=args.num_images,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        **params,
    )
    map_path = out.with_name(f"{out.stem}_acceptance{out.suffix}")
    json_path = out.with_suffix(".json")
    save_image_atomic(grid(result.images), out)
    save_image_atomic(grid(result.acceptance_maps), map_path)
    write_json_atomic(json_path, result.stats)
    steps = sum(s["steps"] for s in result.stats) / len(result.stats)
    ar = result.stats[0]["ar_steps"]
    print(
        f"{args.method}: {steps:.1f} steps per image vs {ar} for plain AR ({ar / steps:.2f}x fewer); "
        f"wall {result.stats[0]['batch_wall_s']:.1f} s"
    )
    print(f"wrote {out}, {map_path}, {json_path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run_bench

    if args.json:
        check_writable(Path(args.json))
    records = run_bench(
        model=args.model,
        methods=args.methods.split(","),
        num_images=args.num_images,
        num_real=args.num_real,
        batch_size=args.batch_size,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
    )
    print(format_table(records))
    if args.json:
        write_json_atomic(args.json, records)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)


def register(commands, generate, bench) -> None:
    from .defaults import DEFAULTS

    g = generate.add_parser("image", help="AR image generation (class-conditional or text-to-image)")
    g.add_argument("--class", dest="class_id", type=int, default=None, help="class id (class-conditional models)")
    g.add_argument("--prompt", default=None, help="text prompt (text-to-image models)")
    g.add_argument(
        "--family", default=None, help="llamagen, llamagen-t2i, janus, chameleon or emu3 (default: recognised)"
    )
    g.add_argument(
        "--method", default="gsd", help="ar, sjd, gsd, lantern, typical, greedy, lantern-draft, lantern++, draft"
    )
    g.add_argument("--num-images", type=int, default=1)
    g.add_argument("--temperature", type=float, default=DEFAULTS["temperature"])
    g.add_argument("--top-k", type=int, default=DEFAULTS["top_k"])
    g.add_argument("--top-p", type=float, default=DEFAULTS["top_p"])
    g.add_argument("--param", type=_param, action="append", help="method parameter name=value (repeatable)")
    g.add_argument("--out", required=True, help="output PNG; the acceptance map and a JSON of stats go beside it")
    _common(g)
    g.set_defaults(func=_generate, guidance_scale=DEFAULTS["guidance_scale"])

    b = bench.add_parser("image", help="every method side by side: speed, FID and class accuracy")
    b.add_argument(
        "--methods",
        default="ar,sjd,gsd,lantern,lantern-draft,lantern++,draft",
        help="comma-separated; a method may carry parameters, e.g. lantern-draft:delta=0.2:k=30",
    )
    b.add_argument("--num-images", type=int, default=100)
    b.add_argument("--num-real", type=int, default=5000, help="real images for the FID reference")
    b.add_argument("--batch-size", type=int, default=50)
    b.add_argument("--json", help="write the records here")
    _common(b)
    b.set_defaults(func=_bench, guidance_scale=DEFAULTS["guidance_scale"])


__all__ = ["register"]
