"""Held-out accuracy of a video classifier on real clips and on their VQ round trips (the classifier's own
validation seeds, 200 clips):

    python -m mmaccel.video.training.eval_classifier --classifier video/weights/classifier.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mmaccel.models.vq import VQModel
from mmaccel.video.classifier import VideoClassifier
from mmaccel.video.model import WEIGHTS_DIR
from mmaccel.video.training.train_classifier import held_out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classifier", type=Path, action="append", required=True,
                   help="classifier.safetensors (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    vq = VQModel.from_pretrained(WEIGHTS_DIR / "vq.safetensors").eval()
    val, val_vq, labels = held_out(vq)
    for path in a.classifier:
        model = VideoClassifier.from_pretrained(path)
        real = float((model.embed(val)[1] == labels).mean())
        through = float((model.embed(val_vq)[1] == labels).mean())
        print(f"{path}: arch {model.arch}, accuracy {real:.3f} on {len(val)} real clips, {through:.3f} through the VQ")


if __name__ == "__main__":
    main()
