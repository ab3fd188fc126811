"""``mmaccel eval fid|clip|fvd`` (and the modalities' metrics): what users' evaluation scripts expect, from local
weights.

Feature spaces other than Inception come from the modalities through the ``mmaccel.features`` entry-point group
(value: ``features(weights: str | None) -> ImageFeatures``): the image modality registers ``domain``, its held-out
classifier; video feature spaces other than I3D through ``mmaccel.video_features`` (see :mod:`mmaccel.eval.fvd`).
Metrics of one modality's own (``eval speech``, ``eval mesh``) are subcommands it adds through the ``mmaccel.eval``
group (value: ``register(eval_subparsers)``). The core so reads any set in any registered space without importing a
modality, the same way ``mmaccel.cli`` gets its subcommands.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..io import check_writable, write_json_atomic

BUILTIN_FEATURES = ("inception",)


def _feature_entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="mmaccel.features")}


def feature_space(name: str, weights: str | None):
    """The :class:`ImageFeatures` named ``name`` (``--features``), loaded from ``weights`` where given."""
    from .generative import ImageFeatures

    if name == "inception":
        if weights is None:
            raise ValueError(
                "--features inception needs --weights PATH: pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
                "(or the same weights as .safetensors); nothing is downloaded"
            )
        from .inception import FIDInceptionV3

        model = FIDInceptionV3.from_file(_weights_file(weights))
        return ImageFeatures("inception", model.features, model.logits)
    registered = _feature_entry_points()
    if name not in registered:
        known = ", ".join([*BUILTIN_FEATURES, *sorted(registered)])
        raise ValueError(f"--features {name!r} is not a feature space; choose one of {known}")
    return registered[name].load()(None if weights is None else _weights_file(weights))


def _weights_file(weights: str) -> str:
    if not Path(weights).exists():
        raise FileNotFoundError(f"--weights {weights!r} does not exist")
    return weights


def _fid(args: argparse.Namespace) -> int:
    from .generative import evaluate
    from .image_sets import check_pair, load_image_set

    if args.json:
        check_writable(args.json)
    real = load_image_set(args.real, "--real")
    fake = load_image_set(args.fake, "--fake")
    check_pair(real, fake)
    record = {
        "real": str(args.real),
        "fake": str(args.fake),
        **evaluate(feature_space(args.features, args.weights), real, fake),
    }
    print(f"features {record['features']}: {record['num_real']} real, {record['num_fake']} fake images")
    for key in ("fid", "precision", "recall", "inception_score", "inception_score_std"):
        if key in record:
            # + 0.0 turns a rounded -0.0 (float error around an exact 0) into 0.0; the JSON keeps the raw value
            print(f"{key}: {round(record[key], 4) + 0.0:.4f}")
    if args.json:
        write_json_atomic(args.json, record)
        print(f"wrote {args.json}")
    return 0


def _clip(args: argparse.Namespace) -> int:
    from ..sample_cli import read_prompt_file
    from .clip_score import clip_scores, load_clip
    from .image_sets import load_image_set

    if args.json:
        check_writable(args.json)
    images = load_image_set(args.images, "--images")
    try:
        prompts = read_prompt_file(args.prompts)
    except ValueError as err:
        raise ValueError(str(err).replace("--prompt-file", "--prompts")) from None
    if len(prompts) != len(images):  # before the model is loaded
        raise ValueError(f"--prompts has {len(prompts)} prompts for {len(images)} images; give one a line per image")
    model, processor = load_clip(args.model)
    scores = clip_scores(model, processor, images, prompts)
    record = {
        "model": str(args.model),
        "images": str(args.images),
        "num_images": len(images),
        "clip_score": float(scores.mean()),
        "clip_score_std": float(scores.std()) if len(scores) > 1 else 0.0,
    }
    print(f"clip_score: {record['clip_score']:.6f} (std {record['clip_score_std']:.6f}, {len(images)} images)")
    if args.json:
        write_json_atomic(args.json, record)
        print(f"wrote {args.json}")
    return 0


def _fvd(args: argparse.Namespace) -> int:
    from .fvd import frechet_video_distance, video_feature_space
    from .video_sets import check_video_pair, load_video_set

    if args.json:
        check_writable(args.json)
    real = load_video_set(args.real, "--real")
    fake = load_video_set(args.fake, "--fake")
    check_video_pair(real, fake)
    space = video_feature_space(args.features, args.weights)
    record = {"real": str(args.real), "fake": str(args.fake), **frechet_video_distance(space, real, fake)}
    t, h, w = real.shape[1:4]
    print(f"features {record['features']}: {record['num_real']} real, {record['num_fake']} fake clips of {t}x{h}x{w}")
    print(f"fvd: {round(record['fvd'], 4) + 0.0:.4f}")
    if args.json:
        write_json_atomic(args.json, record)
        print(f"wrote {args.json}")
    return 0


def add_eval_parser(sub: Any, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """``mmaccel eval NAME``'s parser (for a modality's ``register``), its examples as the epilog, with ``--json``."""
    parser = sub.add_parser(name, help=help, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser


def print_record(record: dict, keys: tuple[str, ...], json_path: str | None) -> None:
    """Print ``keys`` of a metric record (4 decimals, a rounded -0.0 shown as 0.0) and write it to ``json_path``."""
    for key in keys:
        value = record.get(key)
        if isinstance(value, float):
            print(f"{key}: {round(value, 4) + 0.0:.4f}")
        elif value is not None:
            print(f"{key}: {value}")
    if json_path:
        write_json_atomic(json_path, record)
        print(f"wrote {json_path}")


EXAMPLES = """examples:
  mmaccel eval fid --real s/ --fake s2/ --features domain
  mmaccel eval fid --real ref.npz --fake samples/samples.npz --features inception \\
      --weights pt_inception-2015-12-05-6726825d.pth
  mmaccel eval clip --model ~/ckpts/clip-vit-base-patch32 --images samples/ --prompts prompts.txt
"""

FVD_EXAMPLES = """examples:
  mmaccel eval fvd --real real_clips/ --fake samples/ --features domain
  mmaccel eval fvd --real real.npz --fake samples/samples.npz --features i3d --weights i3d_pretrained_400.pt
"""


def register(commands) -> None:
    """Add ``eval fid``, ``eval clip``, ``eval fvd`` and the modalities' ``eval`` subcommands under ``commands``."""
    e = commands.add_parser("eval", help="FID / IS / precision / recall, CLIP score, FVD and modality metrics")
    sub = e.add_subparsers(dest="metric", required=True, metavar="METRIC")
    f = sub.add_parser(
        "fid",
        help="FID, IS, precision and recall between two image sets (folders or ADM .npz files)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--real", required=True, help="reference set: a folder of images or an .npz holding arr_0")
    f.add_argument("--fake", required=True, help="generated set: a folder of images or an .npz holding arr_0")
    f.add_argument(
        "--features", default="inception", help="inception (needs --weights) or a modality's space, e.g. domain"
    )
    f.add_argument("--weights", default=None, help="weights file of the feature network (safetensors or .pth)")
    f.add_argument("--json", help="also write the figures to this JSON file")
    f.set_defaults(func=_fid)
    c = sub.add_parser("clip", help="CLIP score of images against their prompts (transformers' CLIPModel)")
    c.add_argument("--model", required=True, help="a local CLIP folder (config, weights, tokenizer, processor)")
    c.add_argument("--images", required=True, help="a folder of images (sorted by name) or an .npz")
    c.add_argument("--prompts", required=True, help="one prompt a line, line i for image i")
    c.add_argument("--json", help="also write the figures to this JSON file")
    c.set_defaults(func=_clip)
    help = "Frechet video distance between two clip sets (folders of .png/.gif/.mp4 clips or .npz files)"
    v = add_eval_parser(sub, "fvd", help, FVD_EXAMPLES)
    v.add_argument("--real", required=True, help="reference clips: a folder of clip files or an .npz holding arr_0")
    v.add_argument("--fake", required=True, help="generated clips: a folder of clip files or an .npz holding arr_0")
    v.add_argument("--features", default="i3d", help="i3d (needs --weights) or a modality's space, e.g. domain")
    v.add_argument("--weights", default=None, help="weights file of the feature network (safetensors or .pt)")
    v.set_defaults(func=_fvd)
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group="mmaccel.eval"), key=lambda ep: ep.name):  # value: register(eval_sub)
        ep.load()(sub)


__all__ = ["feature_space", "print_record", "register"]
