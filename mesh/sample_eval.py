"""``mmaccel eval mesh``: Chamfer / Hausdorff distances and MMD / COV / 1-NNA (:mod:`mmaccel.mesh.metrics`) between
two folders of meshes, registered through the ``mmaccel.eval`` entry-point group."""

from __future__ import annotations

import argparse
from pathlib import Path

from .tokenizer import MESH_FORMATS

EXAMPLES = """examples:
  mmaccel eval mesh --real reference_meshes/ --fake meshes/
  mmaccel eval mesh --real reference_meshes/ --fake meshes/ --points 2048 --json mesh_metrics.json
"""


def mesh_files(folder: Path, flag: str) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag} {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MESH_FORMATS and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{flag} {str(folder)!r} holds no mesh file ({', '.join(MESH_FORMATS)})")
    return files


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from mmaccel.eval.cli import print_record
    from mmaccel.io import check_writable

    from .metrics import nearest_reference, set_metrics, surface_points
    from .sampler import load_mesh

    if args.json:
        check_writable(args.json)
    if args.points < 1:
        raise ValueError(f"--points must be >= 1, got {args.points}")
    clouds = {}
    for flag, folder in (("--real", args.real), ("--fake", args.fake)):
        files = mesh_files(Path(folder), flag)
        # a mesh without area (no faces, degenerate) has no surface to sample: counted, not scored
        clouds[flag] = [surface_points(load_mesh(f), args.points) for f in files]
    real = [c for c in clouds["--real"] if c is not None]
    fake = [c for c in clouds["--fake"] if c is not None]
    if len(real) < 2:
        raise ValueError(f"--real holds {len(real)} mesh(es) with a surface; the set metrics need at least 2")
    pairs = [nearest_reference(c, real) for c in fake]
    record = {
        "real": str(args.real),
        "fake": str(args.fake),
        "num_real": len(clouds["--real"]),
        "num_fake": len(clouds["--fake"]),
        "scored_fake": len(fake),
        "empty_fake": len(clouds["--fake"]) - len(fake),
        "points": args.points,
        "chamfer": float(np.mean([p[0] for p in pairs])) if pairs else float("nan"),
        "hausdorff": float(np.mean([p[1] for p in pairs])) if pairs else float("nan"),
        **set_metrics(fake, real),
    }
    print(f"mesh: {record['scored_fake']} of {record['num_fake']} fake meshes scored against {len(real)} real")
    print_record(record, ("chamfer", "hausdorff", "mmd", "cov", "nna", "empty_fake"), args.json)
    return 0


def register(sub) -> None:
    from mmaccel.eval.cli import add_eval_parser

    help = "mesh folders: Chamfer and Hausdorff to the nearest real mesh; MMD, COV and 1-NNA of the sets"
    e = add_eval_parser(sub, "mesh", help, EXAMPLES)
    e.add_argument("--real", required=True, help="reference folder of .obj/.ply/.glb meshes")
    e.add_argument("--fake", required=True, help="generated folder (e.g. from mmaccel sample mesh)")
    e.add_argument("--points", type=int, default=1024, help="surface points sampled per mesh (default: 1024)")
    e.set_defaults(func=_eval)
