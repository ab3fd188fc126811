"""``mmaccel sample video``: a folder of clips (animated PNG by default) and an ``.npz`` of uint8 [N, T, H, W, 3]."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmaccel.sample_cli import add_sample_parser, add_sampling_arguments, check_sample_arguments

from .cli import INIT_NAMES

EXAMPLES = """examples:
  mmaccel sample video --method mc-sjd --init temporal-repeat --num-samples 64 --npz --out clips/
  torchrun --nproc-per-node 2 -m mmaccel sample video --method mc-sjd --num-samples 64 --npz --out clips/
  mmaccel eval fvd --real real_clips/ --fake clips/ --features domain
"""


def _sample(args: argparse.Namespace) -> int:
    from mmaccel.sample_cli import class_conditions, method_spec, run_sample_command, sampling_settings
    from mmaccel.sample_distributed import launched_ranks

    from .pipeline import DEFAULT_METHOD, DEFAULTS, VideoARPipeline
    from .sampler import VideoSampler, check_format

    check_sample_arguments(args)
    if args.prompt_file is not None:
        raise ValueError("--prompt-file: the video model is class-conditional; give --class instead")
    suffix = check_format(args.format)
    method, params = method_spec(args, DEFAULT_METHOD, INIT_NAMES)
    ranks = launched_ranks(args.device)
    try:
        pipe = VideoARPipeline.from_pretrained(args.model, device=ranks.device)
        conditions = class_conditions(args.classes, pipe.model.num_classes, pipe.class_label, args.num_samples)
        sampling = sampling_settings(args, DEFAULTS)
        settings = {
            "model": "default" if args.model is None else str(Path(args.model).resolve()),
            "method": method,
            "params": params,
            "format": args.format,
            **sampling,
        }
        sampler = VideoSampler(pipe, method, params, suffix, **sampling)
        return run_sample_command(args, "video", settings, conditions, lambda: sampler, ranks, suffix=suffix,
                                  load_array=_read_clip)
    finally:
        ranks.close()


def _read_clip(path: Path):
    from mmaccel.eval.video_sets import read_clip

    return read_clip(path)


def register(sample) -> None:
    from .pipeline import DEFAULT_METHOD, DEFAULTS

    help = "a folder of clips (animated PNG, GIF or MP4), samples.json and an .npz [N, T, H, W, 3] for FVD"
    s = add_sample_parser(sample, "video", help, EXAMPLES, DEFAULT_METHOD, INIT_NAMES)
    s.add_argument("--init", default=None, help=f"Jacobi init of new window positions: {', '.join(INIT_NAMES)}")
    s.add_argument(
        "--format", default="png", help="clip files: png (animated PNG, lossless; default), gif, or mp4 (needs PyAV)"
    )
    add_sampling_arguments(s, DEFAULTS)
    s.set_defaults(func=_sample)
