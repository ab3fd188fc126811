"""``mmaccel eval fid`` and ``mmaccel eval clip``: the metrics users' evaluation scripts expect, from local weights.

Feature spaces other than Inception come from the modalities through the ``mmaccel.features`` entry-point group
(value: ``features(weights: str | None) -> ImageFeatures``): the image modality registers ``domain``, its held-out
classifier. The core so reads any image set in any registered space without importing a modality, the same way
``mmaccel.cli`` gets its subcommands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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


EXAMPLES = """examples:
  mmaccel eval fid --real s/ --fake s2/ --features domain
  mmaccel eval fid --real ref.npz --fake samples/samples.npz --features inception \\
      --weights pt_inception-2015-12-05-6726825d.pth
  mmaccel eval clip --model ~/ckpts/clip-vit-base-patch32 --images samples/ --prompts prompts.txt
"""


def register(commands) -> None:
    """Add ``eval fid`` and ``eval clip`` under the top-level ``commands``."""
    e = commands.add_parser("eval", help="FID / IS / precision / recall and CLIP score from local weights")
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


__all__ = ["feature_space", "register"]
