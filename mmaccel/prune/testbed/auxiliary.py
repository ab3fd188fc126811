"""Dense auxiliary supervision for training the pruning testbeds.

An answer word carries a few bits per sequence, and with them alone the small testbeds learned to count and to
read colours but not to tell a star from a circle, nor which way a shape moved (left-of and direction sat near
chance after 90 minutes). The generated scenes know, for every pixel, which shape is drawn there. So training adds
small linear heads that read what each visual token shows:

* on the vision tower's last layer, for every patch: the kind and colour of the shape covering it and that
  shape's centre (image testbed), or its colour and centre (video testbed, whose questions name colours);
* video only, on a middle language-model layer at every video token: whether the shape there is still, newly
  appeared, or moving left, right, up or down. The language model is causal, so a token can only answer this by
  looking back at earlier frames, which is the skill the direction question needs.

The heads and their losses exist only during training: the shipped weights are those of the plain transformers
model, and inference never runs them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmaccel.data.scenes import Scene, owner_map

IGNORE = -100
MOTIONS = ("background", "still", "new", "left", "right", "up", "down")


def cell_owner(owner: np.ndarray, cell: int, min_share: float) -> np.ndarray:
    """Per ``cell`` x ``cell`` block of an :func:`owner_map`, the shape covering most of it (-1 when the best covers
    less than ``min_share`` of the block): int64 [rows, cols]."""
    shapes = int(owner.max()) + 1
    rows, cols = owner.shape[0] // cell, owner.shape[1] // cell
    if shapes == 0:
        return np.full((rows, cols), -1, dtype=np.int64)
    onehot = owner[..., None] == np.arange(shapes)
    share = onehot.reshape(rows, cell, cols, cell, shapes).mean(axis=(1, 3))
    return np.where(share.max(-1) >= min_share, share.argmax(-1), -1)


def shape_targets(
    scene: Scene, size: int, cell: int, kinds: tuple[str, ...], colours: tuple[str, ...], min_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell of ``scene``: kind label (0 background, 1 + index in ``kinds``), colour label (likewise) and the
    covering shape's centre (x, y; NaN over background), flattened in raster order."""
    owner = cell_owner(owner_map(scene, size), cell, min_share).reshape(-1)
    shapes = scene.shapes
    kind = np.array([0] + [1 + kinds.index(s.kind) if kinds else 0 for s in shapes])[owner + 1]
    colour = np.array([0] + [1 + colours.index(s.colour) for s in shapes])[owner + 1]
    centres = np.array([(np.nan, np.nan)] + [s.center for s in shapes], dtype=np.float32)[owner + 1]
    return kind, colour, centres


class Capture:
    """Keeps the output of ``module``'s last forward (a forward hook, removed by :meth:`remove`)."""

    def __init__(self, module: nn.Module):
        self.value: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self.value = output[0] if isinstance(output, tuple) else output

    def remove(self) -> None:
        self._handle.remove()


def _vision_layers(model) -> nn.ModuleList:
    tower = model.model.vision_tower
    return getattr(tower, "vision_model", tower).encoder.layers


def _centre_loss(predicted: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    known = ~torch.isnan(centres[..., 0])
    if not known.any():
        return predicted.sum() * 0
    # Centres are in [0, 1]; x10 puts a one-patch error (1/16) on the scale of the cross-entropies.
    return 10 * F.mse_loss(predicted[known], centres[known])


class ImageAuxiliary(nn.Module):
    """Patch heads on the image testbed's vision tower: kind, colour and centre of the shape under each patch.

    Training examples must carry their ``"scene"``; the vision tower's first token (CLS) is skipped.
    """

    def __init__(self, model, kinds: tuple[str, ...], colours: tuple[str, ...], image_size: int, patch_size: int):
        super().__init__()
        width = model.config.vision_config.hidden_size
        self.kinds, self.colours, self.image_size, self.patch_size = kinds, colours, image_size, patch_size
        self.kind = nn.Linear(width, len(kinds) + 1)
        self.colour = nn.Linear(width, len(colours) + 1)
        self.centre = nn.Linear(width, 2)
        self._vision = Capture(_vision_layers(model)[-1])

    def loss(self, examples: list[dict], batch: dict) -> torch.Tensor:
        features = self._vision.value[:, 1:]
        targets = [
            shape_targets(e["scene"], self.image_size, self.patch_size, self.kinds, self.colours) for e in examples
        ]
        kind, colour, centres = (torch.as_tensor(np.stack(t)) for t in zip(*targets))
        return (
            F.cross_entropy(self.kind(features).flatten(0, 1), kind.flatten())
            + F.cross_entropy(self.colour(features).flatten(0, 1), colour.flatten())
            + _centre_loss(self.centre(features), centres)
        )

    def remove(self) -> None:
        self._vision.remove()


class VideoAuxiliary(nn.Module):
    """Heads for the video testbed: colour and centre of the shape under each vision patch of each frame, and the
    motion (:data:`MOTIONS`) of the shape at each video token after language-model layer ``motion_layer``.

    Training examples must carry their ``"clip"`` (:class:`~mmaccel.prune.testbed.video_questions.Clip`). A frame's
    video tokens are OneVision's 2x2-pooled patch grid in raster order, frames in order, then one newline token.
    The mover's tokens in the first frame are not labelled: nothing before them shows it moving.
    """

    def __init__(
        self,
        model,
        colours: tuple[str, ...],
        image_size: int,
        patch_size: int,
        video_token_id: int,
        motion_layer: int = 1,
    ):
        super().__init__()
        vision_width = model.config.vision_config.hidden_size
        text_width = model.config.text_config.hidden_size
        self.colours, self.image_size, self.patch_size = colours, image_size, patch_size
        self.video_token_id = video_token_id
        self.colour = nn.Linear(vision_width, len(colours) + 1)
        self.centre = nn.Linear(vision_width, 2)
        self.motion = nn.Linear(text_width, len(MOTIONS))
        self._vision = Capture(_vision_layers(model)[-1])
        self._text = Capture(model.model.language_model.layers[motion_layer])

    def _motion_labels(self, clip) -> np.ndarray:
        labels = []
        for frame in range(clip.frames):
            scene = clip.scene(frame)
            # A star covers little of its circumscribed square and is often split over four tokens: a token
            # shows a shape when the shape fills 5% of it, or a fifth of the movers in a frame would show nowhere.
            owner = cell_owner(owner_map(scene, self.image_size), 2 * self.patch_size, 0.05).reshape(-1)
            mover = len(scene.shapes) - 1  # Clip.scene draws the mover last
            kinds = []
            for index in owner:
                if index < 0:
                    kinds.append(MOTIONS.index("background"))
                elif index == mover:
                    kinds.append(MOTIONS.index(clip.direction) if frame > 0 else IGNORE)
                elif scene.shapes[index] is clip.newcomer:
                    kinds.append(MOTIONS.index("new"))
                else:
                    kinds.append(MOTIONS.index("still"))
            labels.append(kinds)
        return np.asarray(labels).reshape(-1)

    def loss(self, examples: list[dict], batch: dict) -> torch.Tensor:
        clips = [e["clip"] for e in examples]
        features = self._vision.value  # [batch * frames, patches, width]
        targets = [
            shape_targets(clip.scene(f), self.image_size, self.patch_size, (), self.colours, 0.5)
            for clip in clips
            for f in range(clip.frames)
        ]
        _, colour, centres = (torch.as_tensor(np.stack(t)) for t in zip(*targets))
        hidden = self._text.value
        is_video = batch["input_ids"] == self.video_token_id
        tokens = hidden[is_video].view(len(clips), -1, hidden.shape[-1])[:, :-1]  # the newline token is last
        motion = torch.as_tensor(np.stack([self._motion_labels(clip) for clip in clips]))
        return (
            F.cross_entropy(self.colour(features).flatten(0, 1), colour.flatten())
            + _centre_loss(self.centre(features), centres)
            + F.cross_entropy(self.motion(tokens).flatten(0, 1), motion.flatten(), ignore_index=IGNORE)
        )

    def remove(self) -> None:
        self._vision.remove()
        self._text.remove()
