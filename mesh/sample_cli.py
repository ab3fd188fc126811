"""``mmaccel sample mesh``: a folder of meshes (OBJ, PLY or GLB), samples.json and an ``.npz`` of triangle soups."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmaccel.sample_cli import add_sample_parser, add_sampling_arguments, check_sample_arguments

from .cli import INIT_NAMES

EXAMPLES = """examples:
  mmaccel sample mesh --method xspec --num-samples 36 --npz --out meshes/
  mmaccel sample mesh --method sjd:init=face --class cone,torus --num-samples 8 --format ply --out cones/
  mmaccel eval mesh --real reference_meshes/ --fake meshes/
"""


def _sample(args: argparse.Namespace) -> int:
    from mmaccel.sample import pack_padded
    from mmaccel.sample_cli import class_conditions, run_sample_command, sampling_settings
    from mmaccel.sample_distributed import launched_ranks

    from .methods import check_mesh_params, parse_mesh_method
    from .pipeline import DEFAULT_METHOD, DEFAULTS, MeshARPipeline
    from .sampler import MeshSampler, check_format, triangle_soup

    check_sample_arguments(args)
    if args.prompt_file is not None:
        raise ValueError("--prompt-file: the mesh model is class-conditional; give --class instead")
    suffix = check_format(args.format)
    method, params = parse_mesh_method(args.method or DEFAULT_METHOD, "--method")
    params = check_mesh_params(method, {**params, **dict(args.param or [])})
    ranks = launched_ranks(args.device)
    try:
        pipe = MeshARPipeline.from_pretrained(args.model, device=ranks.device)
        conditions = class_conditions(args.classes, pipe.vocab.num_classes, pipe.class_label, args.num_samples)
        if args.max_faces is not None:
            try:
                pipe.check_faces(args.max_faces)
            except ValueError as err:
                raise ValueError(f"--max-faces: {err}") from None
        sampling = sampling_settings(args, DEFAULTS)
        settings = {
            "model": "default" if args.model is None else str(Path(args.model).resolve()),
            "method": method,
            "params": params,
            "format": args.format,
            "max_faces": args.max_faces,
            **sampling,
        }
        sampler = MeshSampler(pipe, method, params, suffix, max_faces=args.max_faces, **sampling)
        return run_sample_command(
            args,
            "mesh",
            settings,
            conditions,
            lambda: sampler,
            ranks,
            suffix=suffix,
            load_array=triangle_soup,
            pack=pack_padded,
        )
    finally:
        ranks.close()


def register(sample) -> None:
    from .pipeline import DEFAULT_METHOD, DEFAULTS

    help = "a folder of meshes (obj, ply or glb), samples.json and an .npz of triangle soups"
    s = add_sample_parser(sample, "mesh", help, EXAMPLES, DEFAULT_METHOD, INIT_NAMES)
    s.add_argument("--format", default="obj", help="mesh files: obj (default), ply or glb")
    s.add_argument("--max-faces", type=int, default=None, help="face budget per mesh (default: the model's context)")
    add_sampling_arguments(s, DEFAULTS)
    s.set_defaults(func=_sample)
