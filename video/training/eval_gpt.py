"""Held-out validation loss and predictive entropy of video GPT folders, for the model card.

Teacher-forced on ``--clips`` clips of the GPT validation seed set (``SEEDS["gpt"] + 1``, which training never
fits on), class-conditioned: cross-entropy (nats/token, uniform = ln 1024 = 6.93) and the mean entropy of the
model's next-token distribution (the AR entropy at temperature 1, without guidance), and how much the first frame's
loss rises under a wrong shape, a wrong motion or the null class (the class's use). One JSON line per folder.

    python -m mmaccel.video.training.eval_gpt --model video/weights --model /work/train/video
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mmaccel.models.vq import VQModel
from mmaccel.video.data import NUM_CLASSES, SEEDS, make_clips
from mmaccel.video.model import load_video_gpt
from mmaccel.video.training.train_gpt import code_nll as train_code_nll
from mmaccel.video.training.train_gpt import encode_clips


@torch.no_grad()
def evaluate(folder: Path, clips: int = 64, batch: int = 16) -> dict:
    """``{"model", "params", "steps", "val_loss", "entropy"}`` of the GPT in ``folder`` (its own VQ copy)."""
    model = load_video_gpt(folder)
    vq = VQModel.from_pretrained(folder / "vq.safetensors").eval()
    k = model.codebook_size
    video, labels = make_clips(clips, SEEDS["gpt"] + 1, model.frames, model.grid * vq.config.downsample)
    tokens = encode_clips(vq, video)
    meta = json.loads((folder / "gpt_config.json").read_text())

    def code_nll(label: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return train_code_nll(model.model, label + k, codes, k, model.sink)

    true = torch.from_numpy(labels)
    loss = entropy = 0.0
    for i in range(0, clips, batch):
        nll, logits = code_nll(true[i : i + batch], tokens[i : i + batch])
        logp = logits.log_softmax(-1)
        loss += nll.sum().item()
        entropy += -(logp.exp() * logp).sum(-1).sum().item()
    n = clips * tokens.shape[1]
    # Whether the GPT reads its class: the first frame's loss under another class than the clip's. A class is
    # shape * 2 + motion (video/data.py), so +2 changes the shape alone and ^1 the motion alone.
    frame = model.grid * model.grid
    conditions = {"true": true, "wrong_shape": (true + 2) % NUM_CLASSES, "wrong_motion": true ^ 1,
                  "null": torch.full_like(true, NUM_CLASSES)}
    first = {}
    if model.num_classes != NUM_CLASSES:  # not the data's classes (a test model): no shape or motion to swap
        conditions = {}
    for name, label in conditions.items():
        total = sum(code_nll(label[i : i + batch], tokens[i : i + batch, :frame])[0].sum().item()
                    for i in range(0, clips, batch))
        first[name] = total / (clips * frame)
    return {
        "model": str(folder),
        "params": sum(p.numel() for p in model.model.parameters()),
        "steps": meta.get("steps"),
        "val_clips": clips,
        "val_loss": loss / n,
        "entropy": entropy / n,
        # nats/token on the first frame under another class, minus under the clip's own: 0 means it is ignored
        "first_frame_class_gain": {name: first[name] - first["true"] for name in conditions if name != "true"}
        or None,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        type=Path,
        action="append",
        required=True,
        help="a folder with gpt.safetensors and vq.safetensors (repeatable)",
    )
    p.add_argument("--clips", type=int, default=64)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    for folder in a.model:
        print(json.dumps(evaluate(folder, a.clips)), flush=True)


if __name__ == "__main__":
    main()
