"""Held-out validation loss and predictive entropy of video GPT folders, for the model card.

Teacher-forced on ``--clips`` clips of the GPT validation seed set (``SEEDS["gpt"] + 1``, which training never
fits on), class-conditioned: cross-entropy (nats/token, uniform = ln 1024 = 6.93) and the mean entropy of the
model's next-token distribution (the AR entropy at temperature 1, without guidance). One JSON line per folder.

    python -m mmaccel.video.training.eval_gpt --model video/weights --model /work/train/video
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from mmaccel.models.vq import VQModel
from mmaccel.video.data import SEEDS, make_clips
from mmaccel.video.model import load_video_gpt
from mmaccel.video.training.train_gpt import encode_clips


@torch.no_grad()
def evaluate(folder: Path, clips: int = 64, batch: int = 16) -> dict:
    """``{"model", "params", "steps", "val_loss", "entropy"}`` of the GPT in ``folder`` (its own VQ copy)."""
    model = load_video_gpt(folder)
    vq = VQModel.from_pretrained(folder / "vq.safetensors").eval()
    k = model.codebook_size
    video, labels = make_clips(clips, SEEDS["gpt"] + 1, model.frames, model.grid * vq.config.downsample)
    tokens = encode_clips(vq, video)
    ids = torch.cat([torch.from_numpy(labels)[:, None] + k, tokens], 1)
    loss = entropy = 0.0
    for i in range(0, clips, batch):
        chunk = ids[i : i + batch]
        logits = model.model(input_ids=chunk[:, :-1]).logits[..., :k].float()
        logp = logits.log_softmax(-1)
        loss += F.nll_loss(logp.reshape(-1, k), chunk[:, 1:].reshape(-1), reduction="sum").item()
        entropy += -(logp.exp() * logp).sum(-1).sum().item()
    n = clips * tokens.shape[1]
    meta = json.loads((folder / "gpt_config.json").read_text())
    return {
        "model": str(folder),
        "params": sum(p.numel() for p in model.model.parameters()),
        "steps": meta.get("steps"),
        "val_clips": clips,
        "val_loss": loss / n,
        "entropy": entropy / n,
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
