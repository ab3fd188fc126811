"""Train the shape-class CNN that judges generated images (accuracy, FID features).

Its data come from seeds no other image model uses, so it never saw the tokenizer's or GPT's images.

    python -m mmaccel.image.training.train_classifier --out image/weights --minutes 6
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from mmaccel.data.scenes import NUM_CLASSES, make_dataset
from mmaccel.image.classifier import ClassifierConfig, ShapeClassifier

# make_dataset seeds reserved for the classifier (tokenizer: 1000/1001).
TRAIN_SEED = 2000
HELDOUT_SEED = 2001


@torch.no_grad()
def accuracy(model: ShapeClassifier, images: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    """Fraction of ``images`` (uint8 [N, H, W, 3]) whose predicted class equals ``labels``."""
    correct = 0
    for i in range(0, len(images), batch):
        pred = model.predict(images[i : i + batch])
        correct += int((pred == torch.from_numpy(labels[i : i + batch])).sum())
    return correct / max(len(images), 1)


def train(
    out: str,
    minutes: float,
    n_images: int = 20000,
    n_heldout: int = 2000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> float:
    """Train within ``minutes`` of wall time; save; return held-out accuracy."""
    start = time.time()
    torch.manual_seed(seed)
    images, labels = make_dataset(n_images, seed=TRAIN_SEED)
    held_images, held_labels = make_dataset(n_heldout, seed=HELDOUT_SEED)
    print(f"data: {n_images} train / {n_heldout} held-out images in {time.time() - start:.0f}s", flush=True)

    model = ShapeClassifier(ClassifierConfig(num_classes=NUM_CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    train_end = start + minutes * 60 - 30  # keep time for the held-out pass and saving
    train_start = time.time()
    rng = np.random.default_rng(seed)
    step, order, pos = 0, rng.permutation(n_images), 0
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)
    while time.time() < train_end:
        if pos + batch_size > n_images:
            order, pos = rng.permutation(n_images), 0
        idx = torch.from_numpy(order[pos : pos + batch_size])
        pos += batch_size
        x = x_all[idx]
        # Random horizontal flips: every class is mirror-symmetric as a class.
        flip = torch.rand(len(x)) < 0.5
        x[flip] = x[flip].flip(2)
        progress = (time.time() - train_start) / max(train_end - train_start, 1e-6)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        model.train()
        loss = F.cross_entropy(model(x), y_all[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} t={time.time() - start:.0f}s loss={loss.item():.4f}", flush=True)

    acc = accuracy(model, held_images, held_labels)
    path = model.save_pretrained(out)
    print(
        f"done: {step} steps in {(time.time() - start) / 60:.1f} min; held-out accuracy {acc * 100:.2f}% "
        f"on {n_heldout} images (seed {HELDOUT_SEED}); saved {path}",
        flush=True,
    )
    return acc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="image/weights")
    parser.add_argument("--minutes", type=float, default=6.0, help="wall-clock budget, data generation included")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--heldout", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.minutes <= 0.5:
        parser.error(f"--minutes must be > 0.5, got {args.minutes}")
    torch.set_num_threads(args.threads)
    train(args.out, args.minutes, args.images, args.heldout, args.batch_size, args.lr, args.seed)


if __name__ == "__main__":
    main()
