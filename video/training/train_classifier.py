"""Train the held-out video classifier (:mod:`mmaccel.video.classifier`) on clips of its own seeds.

    nice -n 5 python -m mmaccel.video.training.train_classifier --out video/weights --minutes 6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmaccel.video.classifier import VideoClassifier
from mmaccel.video.data import NUM_CLASSES, SEEDS, make_clips


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("video/weights"))
    p.add_argument("--clips", type=int, default=2000)
    p.add_argument("--minutes", type=float, required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.monotonic()
    clips, labels = make_clips(a.clips, SEEDS["classifier"])
    val, val_labels = make_clips(200, SEEDS["classifier"] + 1)
    x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    y = torch.from_numpy(labels)
    model = VideoClassifier(NUM_CLASSES)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    step, gen = 0, torch.Generator().manual_seed(0)
    while time.monotonic() - start < 60 * a.minutes:
        model.train()
        idx = torch.randint(len(x), (32,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            model.eval()
            acc = float((model.embed(val)[1] == val_labels).mean())
            print(f"step {step} loss {loss.item():.3f} val acc {acc:.3f} t {time.monotonic() - start:.0f}s", flush=True)
    model.eval()
    acc = float((model.embed(val)[1] == val_labels).mean())
    a.out.mkdir(parents=True, exist_ok=True)
    model.save(a.out / "classifier.safetensors")
    print(f"done: {step} steps, held-out accuracy {acc:.3f} on {len(val)} clips", flush=True)


if __name__ == "__main__":
    main()
