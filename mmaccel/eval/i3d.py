"""Inflated 3D ConvNet (I3D, Carreira & Zisserman 2017), the feature network of the Fréchet Video Distance
(Unterthiner et al. 2018).

The module names are those of piergiaj/pytorch-i3d's ``InceptionI3d`` (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_mean``, ..., ``logits.conv3d.bias``): the port whose ``rgb_imagenet.pt`` and VideoGPT's
``i3d_pretrained_400.pt`` (the file VideoGPT's and many later FVD scripts load) are state dicts of. Either file
loads unchanged from a local path (``torch.load(weights_only=True)`` or the same tensors as safetensors); nothing is
ever downloaded. Padding is TensorFlow's ``SAME``, computed per input as that port does.

The FVD embedding follows VideoGPT's ``get_fvd_logits``: clips are scaled to [0, 1], their shorter side resized
to 224 (bilinear) and centre-cropped, shifted by -0.5, and the 400 Kinetics logits averaged over time are the
features. The final 2x7x7 average pool needs at least 9 frames; shorter clips have each frame repeated until
they hold 16 (a stretch in time, not new content).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CheckpointError, load_checked, read_state_dict

#: Input side and frames of the FVD embedding.
RESOLUTION = 224
MIN_FRAMES = 16


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TensorFlow's SAME: output ceil(size / stride); the extra pixel of an odd total goes after.
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad ``[B, C, T, H, W]`` so a ``kernel`` / ``stride`` window gives TensorFlow's ``SAME`` output size."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad takes the last axis first
        pads.extend(_same_padding(size, k, s))
    return F.pad(x, pads)


class MaxPool3dSame(nn.Module):
    """Max pool with ``SAME`` zero padding (as the port: inputs follow a ReLU, so zeros never win wrongly)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d (``SAME`` padding) + optional BatchNorm (eps 1e-3, TensorFlow's) + optional ReLU: ``conv3d``, ``bn``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        bias: bool = False,
        relu: bool = True,
    ):
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    """Four branches, concatenated: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1 (``b0`` ... ``b3b``)."""

    def __init__(self, cin: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(cin, w0)
        self.b1a = Unit3D(cin, w1a)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a = Unit3D(cin, w2a)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, w3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


#: (name, widths) of the Inception blocks; each block's input width is the sum of the previous block's outputs.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
#: Max pools placed before the named block.
_POOLS = {
    "Mixed_3b": ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
}


def _out_width(widths: tuple[int, ...]) -> int:
    return widths[0] + widths[2] + widths[4] + widths[5]


class InceptionI3d(nn.Module):
    """I3D (Inception-v1 inflated to 3-D), RGB stream, with pytorch-i3d's ``InceptionI3d`` parameter names."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.blocks: list[str] = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
        width = 192
        for name, widths in _MIXED.items():
            if name in _POOLS:
                pool, kernel, stride = _POOLS[name]
                setattr(self, pool, MaxPool3dSame(kernel, stride))
                self.blocks.append(pool)
            setattr(self, name, InceptionModule(width, widths))
            self.blocks.append(name)
            width = _out_width(widths)
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
        self.logits = Unit3D(width, num_classes, batch_norm=False, bias=True, relu=False)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` -> the pooled Mixed_5c map ``[B, 1024, T', 1, 1]``."""
        for name in self.blocks:
            x = getattr(self, name)(x)
        return self.avg_pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits averaged over time, ``[B, num_classes]`` (the port's dropout is the identity in eval)."""
        return self.logits(self.extract_features(x)).flatten(3).mean((2, 3))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> InceptionI3d:
        """Load a pytorch-i3d ``InceptionI3d`` state dict (``rgb_imagenet.pt``, ``i3d_pretrained_400.pt``, or the
        same tensors as safetensors). The class count is read from ``logits.conv3d.weight``; a file of another
        architecture (a flow-stream I3D, a 2-D network, ...) is refused with the keys that do not fit."""
        state = read_state_dict(path)
        head = state.get("logits.conv3d.weight")
        if head is None or head.ndim != 5:
            raise CheckpointError(
                f"{os.fspath(path)!r} is not a pytorch-i3d InceptionI3d state dict (no 5-D logits.conv3d.weight)"
            )
        model = cls(num_classes=int(head.shape[0]))
        for key, value in model.state_dict().items():  # older BatchNorm dicts lack this counter; eval never reads it
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = value
        load_checked(model, state, os.fspath(path))
        return model.eval()


def fvd_preprocess(clips: torch.Tensor, resolution: int = RESOLUTION) -> torch.Tensor:
    """uint8 clips ``[B, T, H, W, 3]`` -> float ``[B, 3, T', resolution, resolution]`` in [-0.5, 0.5] (VideoGPT's
    FVD input): shorter side resized to ``resolution`` (bilinear), centre crop, frames repeated to >= 16."""
    b, t, h, w, _ = clips.shape
    x = clips.permute(0, 1, 4, 2, 3).flatten(0, 1).float() / 255.0  # [B*T, 3, H, W]
    scale = resolution / min(h, w)
    size = (resolution, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), resolution)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (x.shape[2] - resolution) // 2, (x.shape[3] - resolution) // 2
    x = x[:, :, top : top + resolution, left : left + resolution]
    x = x.view(b, t, 3, resolution, resolution).permute(0, 2, 1, 3, 4)
    if t < MIN_FRAMES:
        x = x.repeat_interleave(math.ceil(MIN_FRAMES / t), dim=2)
    return x - 0.5


@torch.no_grad()
def i3d_embed(model: InceptionI3d, clips: np.ndarray, batch: int = 8) -> torch.Tensor:
    """The FVD embedding, float64 ``[N, num_classes]``, of uint8 clips ``[N, T, H, W, 3]``, in batches."""
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for start in range(0, len(clips), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(clips[start : start + batch]))
        parts.append(model(fvd_preprocess(chunk).to(device)).double().cpu())
    return torch.cat(parts)


__all__ = ["InceptionI3d", "fvd_preprocess", "i3d_embed", "pad_same"]
