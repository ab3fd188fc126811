"""A small CNN that recognises the shape class of ``mmaccel.data.scenes`` images.

It judges generated samples (class accuracy, as the Inception classifier does for ImageNet models) and
its penultimate features stand in for Inception-v3 pool features when computing this domain's FID
(Heusel et al. 2017). It is trained on its own seeds of the generator, never on data the tokenizer or
the GPT saw. Layout: a VGG-style stack (Simonyan & Zisserman 2015) of 3x3 conv + BatchNorm + ReLU with
max-pooling, global average pooling, a ``feature_dim`` embedding, and a linear head.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict


@dataclass
class ClassifierConfig:
    """Hyper-parameters of :class:`ShapeClassifier`."""

    num_classes: int = 10
    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.num_classes < 2:
            raise ValueError(f"ClassifierConfig.num_classes must be >= 2, got {self.num_classes}")
        if not self.widths:
            raise ValueError("ClassifierConfig.widths must not be empty")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ShapeClassifier(nn.Module):
    """Shape-class CNN with a ``features`` method for Frechet distances.

    Inputs may be float [-1, 1] tensors [B, 3, H, W] or uint8 arrays/tensors [B, H, W, 3]; other sizes
    are resized (bilinear) to ``config.image_size``.
    """

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config if config is not None else ClassifierConfig()
        w = self.config.widths
        layers: list[nn.Module] = [*_conv(3, w[0]), nn.MaxPool2d(2)]
        for cin, cout in zip(w[:-1], w[1:]):
            layers += [*_conv(cin, cout), *_conv(cout, cout), nn.MaxPool2d(2)]
        layers += _conv(w[-1], w[-1])
        self.body = nn.Sequential(*layers)
        self.embed = nn.Linear(w[-1], self.config.feature_dim)
        self.head = nn.Linear(self.config.feature_dim, self.config.num_classes)

    def prepare(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Bring images to float [-1, 1] [B, 3, S, S] with S = ``config.image_size``."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if images.dtype == torch.uint8:
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 images must be [B, H, W, 3], got shape {tuple(images.shape)}")
            images = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be float [B, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
        images = images.float()
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images.to(self.embed.weight.device)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.embed(self.body(x).mean(dim=(2, 3))))

    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Class logits [B, num_classes]."""
        return self.head(self._features(self.prepare(images)))

    @torch.no_grad()
    def features(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Penultimate features [B, feature_dim] (eval mode), the embedding used for FID."""
        was_training = self.training
        self.eval()
        out = self._features(self.prepare(images))
        self.train(was_training)
        return out

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Predicted class ids [B] (eval mode)."""
        was_training = self.training
        self.eval()
        out = self.forward(images).argmax(-1)
        self.train(was_training)
        return out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> ShapeClassifier:
        """Load ``classifier.safetensors`` (a file, or a directory holding it) with its json config."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "classifier.safetensors")
        cfg_path = os.path.splitext(path)[0] + "_config.json"
        config = ClassifierConfig()
        if os.path.isfile(cfg_path):
            try:
                with open(cfg_path) as f:
                    config = ClassifierConfig(**json.load(f))
            except (json.JSONDecodeError, TypeError, ValueError) as err:
                raise CheckpointError(f"cannot read classifier config {cfg_path!r}: {err}") from err
        model = cls(config)
        load_checked(model, read_state_dict(path), path)
        return model.eval()

    def save_pretrained(self, directory: str | os.PathLike, name: str = "classifier") -> str:
        """Write ``<name>.safetensors`` and ``<name>_config.json``; return the weights path."""
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        weights = os.path.join(directory, f"{name}.safetensors")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, weights)
        with open(os.path.join(directory, f"{name}_config.json"), "w") as f:
            json.dump(self.config.to_dict(), f, indent=2)
        return weights


DEFAULT_WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "classifier.safetensors")


def load_default_classifier() -> ShapeClassifier:
    """The shipped classifier (``image/weights/classifier.safetensors``)."""
    return ShapeClassifier.from_pretrained(DEFAULT_WEIGHTS)
