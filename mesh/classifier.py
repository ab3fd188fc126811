"""A PointNet-style point-cloud classifier (Qi et al. 2017, "PointNet"): class accuracy and a domain FID.

A shared per-point MLP, a symmetric max pool over the points, and an MLP head. It is trained on surface samples
of held-out procedural meshes (:mod:`mmaccel.mesh.training.train_classifier`); its pooled feature is the space of
the bench's Frechet distance, and its prediction checks that a generated mesh is of the requested class.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import trimesh
from torch import nn

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict

from .metrics import surface_points


class PointNetClassifier(nn.Module):
    """Points ``[B, N, 3]`` (normalised into the unit cube) to class logits ``[B, C]``."""

    def __init__(self, num_classes: int, width: int = 128):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.point_mlp = nn.Sequential(
            nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 2 * width)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, num_classes))

    def features(self, points: torch.Tensor) -> torch.Tensor:
        """The pooled feature ``[B, 2 * width]`` (max over points: invariant to their order)."""
        return self.point_mlp(points).max(1).values

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(points))

    @torch.no_grad()
    def embed(self, meshes: list[trimesh.Trimesh], n_points: int = 512, seed: int = 0):
        """Features and predicted classes of ``meshes``; meshes without area get ``None`` in both."""
        clouds = [surface_points(m, n_points, seed) for m in meshes]
        index = [i for i, c in enumerate(clouds) if c is not None]
        feats: list = [None] * len(meshes)
        preds: list = [None] * len(meshes)
        if index:
            x = torch.from_numpy(np.stack([clouds[i] for i in index])).float()
            f = self.eval().features(x)
            p = self.head(f).argmax(-1)
            for k, i in enumerate(index):
                feats[i], preds[i] = f[k], int(p[k])
        return feats, preds

    def save(self, folder: Path, name: str = "classifier") -> Path:
        from safetensors.torch import save_file

        from mmaccel.io import write_atomic

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.safetensors"
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        write_atomic(path, lambda tmp: save_file(state, tmp))
        config = {"num_classes": self.num_classes, "width": self.width}
        write_atomic(folder / f"{name}_config.json", lambda tmp: Path(tmp).write_text(json.dumps(config) + "\n"))
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> PointNetClassifier:
        path = Path(path)
        config_path = path.with_name(path.stem + "_config.json")
        if not config_path.is_file():
            raise CheckpointError(f"classifier config not found: {str(config_path)!r}")
        try:
            config = json.loads(config_path.read_text())
            model = cls(int(config["num_classes"]), int(config["width"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"classifier config {str(config_path)!r} is not valid: {err}") from err
        load_checked(model, read_state_dict(path), str(path))
        return model.eval()
