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
#: The method of ``--family emu3|cosmos`` when ``--method`` is not given.
FAMILY_METHOD = "mc-sjd:init=temporal-repeat"


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
    """Frames above (none for token-only families), acceptance maps below (bright = accepted late, in forward
    order), one column per frame."""
    import numpy as np
    from PIL import Image

    t, h, w = maps.shape
    m = maps.float().numpy()
    # Each frame's map is scaled to the forwards of the whole clip, so later frames read brighter.
    grey = (255 * (m - m.min()) / max(1.0, float(m.max() - m.min()))).astype(np.uint8)
    f = 8 if frames is None else frames.shape[1] // h  # token-only families (Cosmos): 8 pixels per token
    bottom = np.concatenate([np.kron(g, np.ones((f, f), dtype=np.uint8)) for g in grey], 1)
    strip = np.repeat(bottom[..., None], 3, 2)
    if frames is not None:
        strip = np.concatenate([np.concatenate(list(frames), 1), strip], 0)
    img = Image.fromarray(strip)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def _method(args: argparse.Namespace, default: str) -> tuple[str, dict]:
    """``--method``, ``--init`` and ``--param`` as a method name and its checked parameters."""
    from mmaccel.methods import check_params, parse_method

    method, params = parse_method(args.method or default, "--method")
    extra = dict(args.param or [])
    if args.init is not None:
        if args.init not in INIT_NAMES:
            raise ValueError(f"--init must be one of {', '.join(INIT_NAMES)}, got {args.init!r}")
        extra["init"] = args.init
    return method, check_params(method, {**params, **extra})


def _generate(args: argparse.Namespace) -> int:
    from mmaccel.methods import method as method_entry

    from .pipeline import DEFAULT_METHOD, VideoARPipeline

    count_argument(args.num_videos, "--num-videos")
    if args.family is not None:
        return _generate_family(args)
    for flag, value in (("--prompt", args.prompt), ("--condition", args.condition), ("--frames", args.frames),
                        ("--height", args.height), ("--width", args.width)):
        if value is not None:
            raise ValueError(f"{flag} is for --family emu3 or cosmos; the default video GPT takes --class")
    if args.class_id is None:
        raise ValueError("--class is required (a class name or index of the video GPT)")
    paths = output_paths(args.out, args.num_videos)
    method, params = _method(args, DEFAULT_METHOD)
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


def _family_conditions(args: argparse.Namespace, required: bool = True) -> list | None:
    """The clips' conditions, checked before anything loads: ``--prompt`` texts (Emu3) or ``--condition`` token
    rows (Cosmos), one per clip; None when none is given and ``required`` is False."""
    from .families import FAMILIES, read_conditions

    if args.family not in FAMILIES:
        raise ValueError(f"--family must be one of {', '.join(FAMILIES)}, got {args.family!r}")
    flag = "--prompt" if args.family == "emu3" else "--condition"
    if getattr(args, "class_id", None) is not None:
        raise ValueError(f"--class is for the default video GPT; --family {args.family} takes {flag}")
    wrong, other = (args.condition, "--condition") if args.family == "emu3" else (args.prompt, "--prompt")
    if wrong is not None:
        raise ValueError(f"{other} does not apply to --family {args.family}")
    given = args.prompt if args.family == "emu3" else args.condition
    if not given:
        if not required:
            return None
        what = "repeatable: one clip per prompt" if args.family == "emu3" else "a .npy or .json file of token ids"
        raise ValueError(f"--family {args.family} needs {flag} ({what})")
    return list(args.prompt) if args.family == "emu3" else read_conditions(args.condition)


def _generate_family(args: argparse.Namespace) -> int:
    import numpy as np

    from mmaccel.io import write_atomic
    from mmaccel.sampling import SamplingConfig

    from .families import load_video_family

    if args.schedule is not None:
        raise ValueError("--schedule is for the default video GPT; the families decode with a fixed window")
    method, params = _method(args, FAMILY_METHOD)
    spec = method_spec(method, params)
    suffixes = VIDEO_SUFFIXES if args.family == "emu3" else (".npz",)
    if args.family == "cosmos" and args.out and not str(args.out).lower().endswith(".npz"):
        raise ValueError(f"--out {args.out!r}: --family cosmos writes tokens (.npz; its decoder is TorchScript)")
    conditions = _family_conditions(args)
    if len(conditions) == 1:
        conditions = conditions * args.num_videos
    elif args.num_videos not in (1, len(conditions)):
        raise ValueError(f"--num-videos {args.num_videos} differs from the {len(conditions)} conditions given")
    family = load_video_family(args.family, args.model, args.frames, args.height, args.width)
    files = (output_paths if args.family == "emu3" else
             lambda out, n: output_files(out, n, suffixes, "token"))(args.out, len(conditions))
    guidance = family.default_guidance if args.guidance_scale is None else args.guidance_scale
    sampling = SamplingConfig(1.0 if args.temperature is None else args.temperature)
    prompt = family.prompt(conditions)
    decoder = family.decoder(method, params, sampling, guidance, prompt)
    n = family.num_tokens(prompt)
    seeds = [args.seed + i for i in range(len(conditions))]
    out = decoder.generate(prompt, n, seeds=seeds, progress=True)
    tokens, accept = out.tokens.cpu(), out.stats.accept_step.cpu()
    maps = family.maps(accept)
    frames = family.frames(tokens) if family.frames is not None else None
    for i, (clip_path, png_path, json_path) in enumerate(files):
        clip = None
        if frames is not None:
            clip = frames[i]
            write_clip(clip, clip_path)
            clip = clip[:: max(1, len(clip) // maps.shape[1])][: maps.shape[1]]  # one frame per latent frame
        else:
            full = np.concatenate([np.asarray(conditions[i]), tokens[i].numpy()]).reshape(-1, *maps.shape[2:])

            steps = maps[i].numpy()

            def save(tmp: str, full=full, steps=steps) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, tokens=full, accept_step=steps, condition_frames=len(full) - len(steps))

            write_atomic(clip_path, save)
        save_image_atomic(acceptance_strip(maps[i], clip), png_path)
        steps = int(out.stats.steps_per_sample[i])
        stats = {"family": args.family, "model": str(args.model), "condition": conditions[i], "method": spec,
                 "seed": seeds[i], "guidance_scale": guidance, "temperature": sampling.temperature, "tokens": n,
                 "steps": steps, "ar_steps": n, "step_compression": n / steps, "batch_nfe": out.stats.nfe,
                 "batch_wall_s": out.stats.wall_s}
        write_json_atomic(json_path, stats)
        print(f"{args.family} clip {i} seed {seeds[i]}: {spec}: {steps} forwards vs {n} for AR ({n / steps:.2f}x); "
              f"wrote {clip_path}, {png_path}, {json_path}")
    return 0


def method_spec(name: str, params: dict) -> str:
    """A method name and parameters back as one spec, ``name:key=value:...``."""
    return ":".join([name, *(f"{k}={v}" for k, v in params.items())])


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
    if args.family is not None:
        return _bench_family(args, methods, batch_sizes)
    for flag, value in (("--prompt", args.prompt), ("--condition", args.condition), ("--frames", args.frames),
                        ("--height", args.height), ("--width", args.width)):
        if value is not None:
            raise ValueError(f"{flag} is for --family emu3 or cosmos")
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
    return _report(format_table(records), records, args.json)


def _bench_family(args: argparse.Namespace, methods: list[str], batch_sizes: list[int]) -> int:
    from .bench_family import default_conditions, format_table, run_family_bench
    from .families import load_video_family

    if any(split_schedule_text(m) for m in methods):
        raise ValueError("--methods: a schedule is for the default video GPT; the families use a fixed window")
    given = _family_conditions(args, required=False)  # they cycle over the --num-videos clips
    family = load_video_family(args.family, args.model, args.frames, args.height, args.width)
    rows = default_conditions(family, args.num_videos, args.seed) if not given else \
        [given[i % len(given)] for i in range(args.num_videos)]
    guidance = family.default_guidance if args.guidance_scale is None else args.guidance_scale
    temperature = 1.0 if args.temperature is None else args.temperature
    records = run_family_bench(family, methods, rows, batch_sizes, guidance, temperature, args.seed, progress=False)
    for r in records:
        r["model"] = str(args.model)
    return _report(format_table(records), records, args.json)


def split_schedule_text(spec: str) -> bool:
    """Whether a method spec carries ``:schedule=`` (without importing the schedule module's torch code)."""
    return any(part.startswith("schedule=") for part in spec.split(":")[1:])


def _report(table: str, records: list, json_path: str | None) -> int:
    print(table)
    if json_path:
        write_json_atomic(json_path, records)
        print(f"wrote {json_path}")
    return 0


def _family_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", default=None,
                   help="a real family in --model: emu3 (Emu3ForConditionalGeneration, text-to-video) or cosmos "
                        "(Cosmos-Predict1 AR, video-to-world over DV8x16x16 tokens); default: the video GPT")
    p.add_argument("--prompt", action="append", default=None, help="emu3: a text prompt (repeatable, one clip each)")
    p.add_argument("--condition", default=None,
                   help="cosmos: .npy or .json DV8x16x16 token ids of whole conditioning latent frames, [N] or "
                        "[clips, N]")
    for axis in ("frames", "height", "width"):
        p.add_argument(f"--{axis}", type=int, default=None, help=f"emu3: latent {axis} of the clip's code grid")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="classifier-free guidance scale (default 2.0; emu3 3.0; cosmos runs unguided, 1)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 is greedy (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="clip i uses seed + i (default: 0)")


GENERATE_EXAMPLES = """examples:
  mmaccel generate video --class 3 --method mc-sjd --init temporal-repeat --out clip.gif
  mmaccel generate video --family emu3 --model ~/ckpts/Emu3-Gen-hf --frames 4 --height 32 --width 32 \\
      --prompt 'a red ball rolls' --out ball.gif
  mmaccel generate video --family cosmos --model ~/ckpts/Cosmos-1.0-Autoregressive-4B \\
      --condition first_frame.npy --out world.npz
"""


def register(commands, generate, bench) -> None:
    from .data import CLASS_NAMES

    g = generate.add_parser(
        "video",
        help="class-conditional AR video generation (8 frames of 8x8 VQ tokens)",
        description="Generate clips with plain AR sampling or a core method; Jacobi methods take --init.",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_method_help(g, INIT_NAMES)
    g.add_argument("--class", dest="class_id", type=class_argument, default=None,
                   help=f"class name ({', '.join(CLASS_NAMES)}) or index (the default video GPT)")
    g.add_argument("--method", default=None, help="mc-sjd (default), ar, sjd, gsd, ... (listed below)")
    g.add_argument("--init", default=None, help=f"Jacobi init of new window positions: {', '.join(INIT_NAMES)}")
    g.add_argument("--schedule", default=None,
                   help=f"window schedule of a Jacobi method: {', '.join(SCHEDULE_NAMES)} (default: a fixed window)")
    g.add_argument("--param", type=param_argument, action="append", help="a method parameter, name=value (repeatable)")
    g.add_argument("--num-videos", type=int, default=1)
    g.add_argument("--out", required=True, help="output clip (.gif, or .mp4 with PyAV; --family cosmos: .npz tokens); "
                   "OUT.png and OUT.json beside it")
    _family_flags(g)
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
    _family_flags(b)
    _common(b)
    b.set_defaults(func=_bench)


__all__ = ["register"]
