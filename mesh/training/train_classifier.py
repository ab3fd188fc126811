"""Train the held-out point-cloud classifier of the mesh bench (PointNet-style) within a wall-clock budget.

Its meshes come from seeds no other mesh training uses (``SEED`` + step); each step samples fresh shapes and
fresh surface points, so it never sees a shape twice. Prints the accuracy on a fixed held-out set.

    nice -n 5 python -m mmaccel.mesh.training.train_classifier --out mesh/weights --minutes 6
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmaccel.mesh.classifier import PointNetClassifier
from mmaccel.mesh.data import CLASS_NAMES, NUM_CLASSES, make_shape
from mmaccel.mesh.metrics import surface_points

SEED = 200_000
VAL_SEED = 299_999


def clouds(n: int, seed: int, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    x = np.stack([surface_points(make_shape(CLASS_NAMES[c], rng), points, seed + i) for i, c in enumerate(labels)])
    return torch.from_numpy(x).float(), torch.from_numpy(labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="mesh/weights")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--points", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=36)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, decayed on a cosine to 0")
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = PointNetClassifier(NUM_CLASSES, args.width)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    budget = args.minutes * 60 - 15
    val = clouds(360, VAL_SEED, args.points)
    step = 0
    while (elapsed := time.perf_counter() - start) < budget:
        # The schedule follows the clock because the run's only budget is wall time, so its step count is unknown.
        for group in opt.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        x, y = clouds(args.batch_size, SEED + step, args.points)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            with torch.no_grad():
                acc = float((model(val[0]).argmax(-1) == val[1]).float().mean())
            print(f"  step {step}  loss {loss.item():.4f}  val_acc {acc:.3f}", flush=True)
    with torch.no_grad():
        acc = float((model.eval()(val[0]).argmax(-1) == val[1]).float().mean())
    path = model.save(Path(args.out))
    print(f"final: steps {step}  val_acc {acc:.4f} on {len(val[1])} held-out shapes; saved {path}", flush=True)


if __name__ == "__main__":
    main()
