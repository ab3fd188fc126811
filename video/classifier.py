"""Held-out video classifier (class = shape + motion): a per-frame CNN with temporal differences and pooling
(``arch="frame"``), or an early-fusion CNN over the clip's frames stacked as channels (``arch="fusion"``, the
default since session 4: motion is then a pattern across input channels, which the first conv sees directly).

Its pooled features give the bench's domain Frechet video distance ("FVD (domain)": a Frechet distance in this
network's feature space, after Unterthiner et al. 2018, who use an I3D network we cannot download), and its
predictions the class accuracy of generated clips. It is trained on clips of seeds nothing else uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict
from mmaccel.io import write_atomic

ARCHS = ("frame", "fusion")


class VideoClassifier(nn.Module):
    """``arch="frame"``: frame encoder (3 conv blocks) -> per-frame features; the mean of features and of their
    frame-to-frame differences (motion) is the clip feature. ``arch="fusion"``: the ``frames`` frames enter one
    CNN as ``3 * frames`` channels (early fusion, as in Karpathy et al. 2014), 4 conv + BatchNorm blocks. A linear
    head gives the class."""

    def __init__(self, num_classes: int, width: int = 32, arch: str = "frame", frames: int = 8):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"classifier arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        self.num_classes, self.width, self.arch, self.frames = num_classes, width, arch, frames
        c = width
        if arch == "fusion":
            # Pool after every block: the CPU budget buys steps, and BatchNorm makes each step count.
            chans = [3 * frames, c, 2 * c, 4 * c, 4 * c]
            blocks = []
            for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
                pool = nn.MaxPool2d(2) if i < 3 else nn.AdaptiveAvgPool2d(2)
                blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), pool]
            self.frame = nn.Sequential(*blocks, nn.Flatten())
        else:
            self.frame = nn.Sequential(
                nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            )
        self.head = nn.Linear(16 * c, num_classes)

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips float [B, T, 3, H, W] in [-1, 1] -> features [B, 16 * width]."""
        b, t = clips.shape[:2]
        if self.arch == "fusion":
            if t != self.frames:
                raise ValueError(f"this classifier reads clips of {self.frames} frames, got {t}")
            return self.frame(clips.flatten(1, 2))
        f = self.frame(clips.flatten(0, 1)).view(b, t, -1)
        motion = (f[:, 1:] - f[:, :-1]).mean(1) if t > 1 else torch.zeros_like(f[:, 0])
        return torch.cat([f.mean(1), motion], 1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(clips))

    @torch.no_grad()
    def embed(self, clips: np.ndarray, batch: int = 64) -> tuple[torch.Tensor, np.ndarray]:
        """uint8 clips [N, T, H, W, 3] -> (features float64 [N, F], predicted classes [N])."""
        feats, preds = [], []
        for i in range(0, len(clips), batch):
            x = torch.from_numpy(np.ascontiguousarray(clips[i : i + batch])).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
            f = self.features(x)
            feats.append(f.double())
            preds.append(self.head(f).argmax(1).numpy())
        return torch.cat(feats), np.concatenate(preds)

    def save(self, path: Path) -> None:
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        write_atomic(path, lambda tmp: save_file(state, tmp))
        cfg = {"num_classes": self.num_classes, "width": self.width, "arch": self.arch, "frames": self.frames}
        config_path = path.with_name(path.stem + "_config.json")
        write_atomic(config_path, lambda tmp: Path(tmp).write_text(json.dumps(cfg) + "\n"))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> VideoClassifier:
        path = Path(path)
        cfg_path = path.with_name(path.stem + "_config.json")
        if not cfg_path.is_file():
            raise CheckpointError(f"video classifier config not found: {str(cfg_path)!r}")
        cfg = json.loads(cfg_path.read_text())
        # Configs written before "arch" existed are the per-frame network.
        model = cls(int(cfg["num_classes"]), int(cfg["width"]), cfg.get("arch", "frame"), int(cfg.get("frames", 8)))
        load_checked(model, read_state_dict(path), str(path))
        return model.eval()
