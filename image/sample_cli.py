"""``mmaccel sample image``: a folder of PNGs (and an ADM ``.npz``) from the core's sample driver."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmaccel.cli import with_method_help
from mmaccel.sample_cli import add_sample_arguments, check_sample_arguments, cycle, read_prompt_file

from .cli import INIT_NAMES, _class_label, _sampling, class_index

EXAMPLES = """examples:
  mmaccel sample image --method sjd --num-samples 200 --npz --out samples/
  torchrun --nproc-per-node 2 -m mmaccel sample image --method sjd --num-samples 200 --npz --out samples/
  mmaccel sample image --method lantern --param delta=0.2 --class star,circle --num-samples 50 --out stars/
"""


def _labels(text: str | None, num_classes: int | None, names: tuple[str, ...], n: int) -> list[int]:
    if num_classes is None:
        raise ValueError("--class: this model is text-to-image; give --prompt-file instead")
    if text is None:
        return cycle(range(num_classes), n)
    labels = [class_index(_class_label(t.strip()), num_classes, names) for t in text.split(",") if t.strip()]
    if not labels:
        raise ValueError(f"--class takes comma-separated labels, got {text!r}")
    return cycle(labels, n)


def _sample(args: argparse.Namespace) -> int:
    from mmaccel.data.scenes import CLASS_NAMES
    from mmaccel.methods import check_params
    from mmaccel.sample_cli import run_sample_command
    from mmaccel.sample_distributed import launched_ranks

    from .defaults import DEFAULT_METHOD, DEFAULTS
    from .pipeline import ImageARPipeline
    from .sampler import ImageSampler

    check_sample_arguments(args)
    method = args.method or DEFAULT_METHOD
    params = check_params(method, dict(args.param or []))
    prompts = read_prompt_file(args.prompt_file) if args.prompt_file is not None else None
    ranks = launched_ranks(args.device)
    try:
        pipe = ImageARPipeline.from_pretrained(args.model, device=ranks.device, family=args.family)
        if prompts is not None:
            if pipe.num_classes is not None:
                raise ValueError("--prompt-file: this model is class-conditional; give --class instead")
            conditions = cycle(prompts, args.num_samples)
        else:
            names = CLASS_NAMES if args.model is None else ()
            conditions = _labels(args.classes, pipe.num_classes, names, args.num_samples)
        sampling = {
            "guidance_scale": DEFAULTS["guidance_scale"] if args.guidance_scale is None else args.guidance_scale,
            "temperature": DEFAULTS["temperature"] if args.temperature is None else args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
        }
        settings = {
            "model": "default" if args.model is None else str(Path(args.model).resolve()),
            "family": pipe.family.name,
            "method": method,
            "params": params,
            **sampling,
        }
        sampler = ImageSampler(pipe, method, params, **sampling)
        return run_sample_command(args, "image", settings, conditions, lambda: sampler, ranks)
    finally:
        ranks.close()


def register(sample) -> None:
    from .defaults import DEFAULT_METHOD, DEFAULTS

    s = sample.add_parser(
        "image",
        help="a folder of PNGs, samples.json and an ADM .npz for FID scripts (torchrun shards it)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_method_help(s, INIT_NAMES)
    add_sample_arguments(s, DEFAULT_METHOD)
    s.add_argument("--family", default=None, help="llamagen, llamagen-t2i, janus, anole, chameleon or emu3")
    _sampling(s, DEFAULTS)
    s.add_argument(
        "--guidance-scale", type=float, default=None, help=f"guidance scale (default: {DEFAULTS['guidance_scale']})"
    )
    s.set_defaults(func=_sample)
