"""Train the held-out video classifier (:mod:`mmaccel.video.classifier`) on clips of its own seeds.

    nice -n 5 python -m mmaccel.video.training.train_classifier --out video/weights --minutes 20 --threads 1

Generated clips are decoded by the VQ, so a share of the training clips (``--vq-share``) goes through the shipped
VQ (encode, decode) first: the classifier then sees real clips and VQ-blurred ones of the same seeds, and scores
generated clips on what they show, not on the VQ's blur. Nothing else uses these seeds.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmaccel.models.vq import VQModel
from mmaccel.video.classifier import ARCHS, VideoClassifier
from mmaccel.video.data import NUM_CLASSES, SEEDS, make_clips
from mmaccel.video.model import WEIGHTS_DIR


@torch.no_grad()
def vq_roundtrip(vq: VQModel, clips: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 clips [N, T, H, W, 3] -> the same clips encoded and decoded by ``vq`` (what generated clips look like)."""
    n, t = clips.shape[:2]
    frames = clips.reshape(n * t, *clips.shape[2:])
    out = np.empty_like(frames)
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i : i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = vq.decode_code(vq.encode(x))
        out[i : i + batch] = ((y + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out.reshape(clips.shape)


def held_out(vq: VQModel, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The classifier's validation clips (seed ``classifier + 1``): (real clips, their VQ round trips, labels)."""
    val, labels = make_clips(n, SEEDS["classifier"] + 1)
    return val, vq_roundtrip(vq, val), labels


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("video/weights"))
    p.add_argument("--clips", type=int, default=3000)
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget, data preparation included")
    p.add_argument("--arch", default="fusion", choices=ARCHS)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--vq-share", type=float, default=0.5, help="share of training clips seen through the VQ")
    p.add_argument("--vq", type=Path, default=WEIGHTS_DIR, help="folder holding the vq.safetensors clips go through")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    start = time.monotonic()
    vq = VQModel.from_pretrained(a.vq / "vq.safetensors").eval()
    clips, labels = make_clips(a.clips, SEEDS["classifier"])
    k = int(round(a.vq_share * len(clips)))
    clips[:k] = vq_roundtrip(vq, clips[:k])  # make_clips shuffles the labels, so the VQ share is balanced
    val, val_vq, val_labels = held_out(vq)
    print(f"data: {len(clips)} clips ({k} through the VQ) in {time.monotonic() - start:.0f}s", flush=True)
    x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    y = torch.from_numpy(labels)
    model = VideoClassifier(NUM_CLASSES, a.width, a.arch, clips.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    budget = 60 * a.minutes - (time.monotonic() - start)
    train_start = time.monotonic()
    step, gen = 0, torch.Generator().manual_seed(0)
    while (elapsed := time.monotonic() - train_start) < budget:
        model.train()
        for group in opt.param_groups:  # cosine over the wall-clock budget
            group["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget)))
        idx = torch.randint(len(x), (a.batch,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            model.eval()
            acc = float((model.embed(val)[1] == val_labels).mean())
            acc_vq = float((model.embed(val_vq)[1] == val_labels).mean())
            line = f"step {step} loss {loss.item():.3f} val acc {acc:.3f} (VQ {acc_vq:.3f}) t {elapsed:.0f}s"
            print(line, flush=True)
    model.eval()
    acc = float((model.embed(val)[1] == val_labels).mean())
    acc_vq = float((model.embed(val_vq)[1] == val_labels).mean())
    a.out.mkdir(parents=True, exist_ok=True)
    model.save(a.out / "classifier.safetensors")
    print(f"done: {step} steps, held-out accuracy {acc:.3f} real, {acc_vq:.3f} through the VQ, on {len(val)} clips",
          flush=True)


if __name__ == "__main__":
    main()
