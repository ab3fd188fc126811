"""``mmaccel generate video`` and ``mmaccel bench video``."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from mmaccel.cli import (
    batch_sizes_argument,
    class_argument,
    count_argument,
    method_specs,
    output_files,
    param_argument,
    with_method_help,
)
from mmaccel.io import check_writable, save_image_atomic, write_atomic, write_json_atomic

#: The video Jacobi initialisations (temporal.init_names()), named here so registration imports no torch.
INIT_NAMES = (
    "random", "vertical", "horizontal", "horizontal-sample", "temporal-repeat", "temporal-sample",
    "temporal-repeat+vertical", "temporal-repeat+horizontal", "temporal-repeat+horizontal-sample",
    "temporal-sample+vertical", "temporal-sample+horizontal", "temporal-sample+horizontal-sample",
)
VIDEO_SUFFIXES = (".gif", ".mp4")
#: schedule.SCHEDULES, for the same reason.
SCHEDULE_NAMES = ("frame", "row", "diagonal")


def output_paths(out: str | Path, count: int) -> list[tuple[Path, Path, Path]]:
    """(clip, acceptance-map strip PNG, stats JSON) per clip: ``OUT``, ``OUT.png``, ``OUT.json`` for one clip,
    ``OUT_i.*`` for several. Refused (before any work) for an unknown format, MP4 without ``av``, colliding or
    unwritable names."""
    files = output_files(out, count, VIDEO_SUFFIXES, "video")
    if Path(out).suffix.lower() == ".mp4" and importlib.util.find_spec("av") is None:
        raise ValueError(f"--out {str(out)!r}: writing MP4 needs PyAV (pip install av); use .gif instead")
    return files


def write_clip(frames, path: Path, fps: int = 4, scale: int = 4) -> None:
    """uint8 frames [T, H, W, 3] as a looping GIF (PIL) or an MP4 (PyAV), written atomically."""
    from PIL import Image

    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    if path.suffix.lower() == ".gif":
        write_atomic(path, lambda tmp: images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0))
        return
    import av

    def encode(tmp: str) -> None:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = images[0].size
            stream.pix_fmt = "yuv420p"
            for im in images:
                for packet in stream.encode(av.VideoFrame.from_image(im)):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    write_atomic(path, encode)


def acceptance_strip(maps, frames, scale: int = 4):
    """Frames above, acceptance maps below (bright = accepted late, in forward order), one column per frame."""
    import numpy as np
    from PIL import Image

    t, h, w = maps.shape
    top = np.concatenate(list(frames), 1)
    m = maps.float().numpy()
    # Each frame's map is scaled to the forwards of the whole clip, so later frames read brighter.
    grey = (255 * (m - m.min()) / max(1.0, float(m.max() - m.min()))).astype(np.uint8)
    f = frames.shape[1] // h
    bottom = np.concatenate([np.kron(g, np.ones((f, f), dtype=np.uint8)) for g in grey], 1)
    strip = np.concatenate([top, np.repeat(bottom[..., None], 3, 2)], 0)
    img = Image.fromarray(strip)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def _generate(args: argparse.Namespace) -> int:
    from mmaccel.methods import check_params, parse_method
    from mmaccel.methods import method as method_entry

    from .pipeline import DEFAULT_METHOD, VideoARPipeline

    count_argument(args.num_videos, "--num-videos")
    paths = output_paths(args.out, args.num_videos)
    method, params = parse_method(args.method or DEFAULT_METHOD, "--method")
    extra = dict(args.param or [])
    if args.init is not None:
        if args.init not in INIT_NAMES:
            raise ValueError(f"--init must be one of {', '.join(INIT_NAMES)}, got {args.init!r}")
        extra["init"] = args.init
    params = check_params(method, {**params, **extra})
    if args.schedule is not None:
        if args.schedule not in SCHEDULE_NAMES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULE_NAMES)}, got {args.schedule!r}")
        if method_entry(method).drafter != "jacobi" or params.get("window") == "auto":
            raise ValueError(f"--schedule {args.schedule} needs a Jacobi method with a fixed window, not {method!r}")
    pipe = VideoARPipeline.from_pretrained(args.model)
    try:
        label = pipe.class_label(args.class_id)
    except ValueError as err:
        raise ValueError(f"--class: {err}") from None
    result = pipe(
        label,
        method=method,
        num_videos=args.num_videos,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        seed=args.seed,
        progress=True,
        schedule=args.schedule,
        **params,
    )
    for i, (clip_path, png_path, json_path) in enumerate(paths):
        write_clip(result.frames[i], clip_path)
        save_image_atomic(acceptance_strip(result.acceptance_maps[i], result.frames[i]), png_path)
        write_json_atomic(json_path, result.stats[i])
        s = result.stats[i]
        print(
            f"{s['class']} seed {s['seed']}: {method}: {s['steps']} forwards vs {s['tokens']} for AR "
            f"({s['step_compression']:.2f}x); wrote {clip_path}, {png_path}, {json_path}"
        )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from mmaccel.methods import parse_method

    from .bench import format_table, run_bench

    if args.json:
        check_writable(Path(args.json))
    from .schedule import split_schedule

    methods = method_specs(args.methods, lambda m: parse_method(split_schedule(m)[0]))
    count_argument(args.num_videos, "--num-videos")
    batch_sizes = batch_sizes_argument(args.batch_sizes)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    records = run_bench(
        model=args.model,
        methods=methods,
        num_videos=args.num_videos,
        batch_sizes=batch_sizes,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        seed=args.seed,
        progress=True,
    )
    print(format_table(records))
    if args.json:
        write_json_atomic(args.json, records)
        print(f"wrote {args.json}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale (default 2.0)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 is greedy (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="clip i uses seed + i (default: 0)")


def register(commands, generate, bench) -> None:
    from .data import CLASS_NAMES

    g = generate.add_parser(
        "video",
        help="class-conditional AR video generation (8 frames of 8x8 VQ tokens)",
        description="Generate clips with plain AR sampling or a core method; Jacobi methods take --init.",
        epilog="example:\n  mmaccel generate video --class 3 --method mc-sjd --init temporal-repeat --out clip.gif",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_method_help(g, INIT_NAMES)
    g.add_argument("--class", dest="class_id", type=class_argument, required=True,
                   help=f"class name ({', '.join(CLASS_NAMES)}) or index")
    g.add_argument("--method", default=None, help="mc-sjd (default), ar, sjd, gsd, ... (listed below)")
    g.add_argument("--init", default=None, help=f"Jacobi init of new window positions: {', '.join(INIT_NAMES)}")
    g.add_argument("--schedule", default=None,
                   help=f"window schedule of a Jacobi method: {', '.join(SCHEDULE_NAMES)} (default: a fixed window)")
    g.add_argument("--param", type=param_argument, action="append", help="a method parameter, name=value (repeatable)")
    g.add_argument("--num-videos", type=int, default=1)
    g.add_argument("--out", required=True, help="output clip (.gif, or .mp4 with PyAV); OUT.png and OUT.json beside it")
    _common(g)
    g.set_defaults(func=_generate)

    b = bench.add_parser("video", help="video methods side by side: forwards, wall clock, FVD (domain), accuracy")
    with_method_help(b, INIT_NAMES)
    b.add_argument("--methods", default="ar,sjd,mc-sjd,mc-sjd:init=temporal-repeat,mc-sjd:init=temporal-sample",
                   help="comma-separated method specs; a Jacobi method may add :schedule=frame|row|diagonal "
                        "(default: %(default)s)")
    b.add_argument("--num-videos", type=int, default=16, help="clips per method, classes in turn")
    b.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    b.add_argument("--json", help="write the records here")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    _common(b)
    b.set_defaults(func=_bench)


__all__ = ["register"]
