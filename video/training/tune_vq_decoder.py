"""Fine-tune the video VQ's decoder on the video frames, with its encoder and codebook frozen.

The shipped video VQ is the image default model's tokenizer, trained on 64x64 scenes; at the clips' 32x32 its
reconstructions are blurry at shape edges, and the held-out classifier reads real clips at 0.955 but the same
clips through the VQ at 0.705. Only ``post_quant_conv`` and the decoder learn here, so every clip encodes to the
same tokens as before: the GPT trained on those tokens stays valid, and only what its tokens are decoded into
changes. The loss is the tokenizers' :func:`~mmaccel.models.vq.reconstruction_loss` on frames of fresh clips
(seed base ``SEEDS["vq_decoder"]``; its validation clips are the next seed).

    OMP_NUM_THREADS=1 python -m mmaccel.video.training.tune_vq_decoder --out OUT --minutes 40 --threads 1

Before and after training it prints the PSNR of held-out frames and the shipped classifier's accuracy on its own
held-out clips through the VQ (``train_classifier.held_out``). ``OUT`` gets ``vq.safetensors`` and
``vq_config.json``, written atomically.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from mmaccel.models.vq import VQModel, reconstruction_loss
from mmaccel.video.classifier import VideoClassifier
from mmaccel.video.data import SEEDS, make_clips
from mmaccel.video.model import WEIGHTS_DIR
from mmaccel.video.training.train_classifier import held_out
from mmaccel.video.training.train_gpt import encode_clips


def frames_tensor(clips: np.ndarray) -> torch.Tensor:
    """uint8 clips ``[N, T, H, W, 3]`` -> float frames in ``[-1, 1]``, ``[N * T, 3, H, W]``."""
    frames = clips.reshape(-1, *clips.shape[2:])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def frame_tokens(vq: VQModel, clips: np.ndarray) -> torch.Tensor:
    """The frozen encoder's tokens of every frame of ``clips``, ``[N * T, h, w]`` (``train_gpt.encode_clips``)."""
    f = vq.config.downsample
    return encode_clips(vq, clips).view(-1, clips.shape[2] // f, clips.shape[3] // f)


def decode_tokens(vq: VQModel, tokens: torch.Tensor) -> torch.Tensor:
    """``decode_code`` with gradients: tokens ``[N, h, w]`` -> frames ``[N, 3, H, W]``."""
    return vq.decode(vq.code_latent(tokens))


@torch.no_grad()
def psnr(vq: VQModel, frames: torch.Tensor, tokens: torch.Tensor, batch: int = 256) -> float:
    """Mean-squared-error PSNR (pixels in [0, 1]) of ``tokens`` decoded against ``frames``."""
    err = sum(
        float(((decode_tokens(vq, tokens[i : i + batch]).clamp(-1, 1) - frames[i : i + batch]) / 2).pow(2).sum())
        for i in range(0, len(frames), batch)
    )
    return 10 * math.log10(frames.numel() / max(err, 1e-12))


def classifier_accuracy(vq: VQModel, classifier: VideoClassifier, n: int = 200) -> tuple[float, float]:
    """The classifier's accuracy on ``n`` of its own held-out clips, real and through ``vq``."""
    real, through, labels = held_out(vq, n)
    return float((classifier.embed(real)[1] == labels).mean()), float((classifier.embed(through)[1] == labels).mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vq", default=str(WEIGHTS_DIR), help="folder holding the vq.safetensors to start from")
    p.add_argument("--classifier", default=str(WEIGHTS_DIR / "classifier.safetensors"))
    p.add_argument("--out", required=True, help="folder to write vq.safetensors and vq_config.json to")
    p.add_argument("--clips", type=int, default=3000, help="training clips (8 frames each)")
    p.add_argument("--val-clips", type=int, default=32, help="held-out clips for the PSNR")
    p.add_argument("--classifier-clips", type=int, default=200, help="the classifier's held-out clips (its own 200)")
    p.add_argument("--batch", type=int, default=64, help="frames per step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget, data encoding included")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if Path(a.out).resolve() == Path(a.vq).resolve():
        p.error("--out must differ from --vq (the tuned decoder goes to a new folder, to be copied after review)")
    start = time.monotonic()
    deadline = start + a.minutes * 60
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    vq = VQModel.from_pretrained(a.vq).eval()
    classifier = VideoClassifier.from_pretrained(a.classifier)
    clips, val_clips = make_clips(a.clips, SEEDS["vq_decoder"])[0], make_clips(a.val_clips, SEEDS["vq_decoder"] + 1)[0]
    frames, tokens = frames_tensor(clips), frame_tokens(vq, clips)
    val_frames, val_tokens = frames_tensor(val_clips), frame_tokens(vq, val_clips)
    real, through = classifier_accuracy(vq, classifier, a.classifier_clips)
    print(f"data: {len(frames)} frames encoded in {time.monotonic() - start:.0f}s", flush=True)
    print(f"before: val PSNR {psnr(vq, val_frames, val_tokens):.2f} dB  classifier {real:.3f} real, "
          f"{through:.3f} through the VQ", flush=True)

    for module in (vq.encoder, vq.quant_conv, vq.quantize):
        module.requires_grad_(False)
    params = [*vq.post_quant_conv.parameters(), *vq.decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    step, budget = 0, max(deadline - time.monotonic(), 1e-9)
    t0 = time.monotonic()
    vq.decoder.train()
    while step == 0 or time.monotonic() < deadline:  # at least one step, even past a budget spent on data
        frac = min(1.0, (time.monotonic() - t0) / budget)
        for g in opt.param_groups:  # cosine over the wall-clock budget, after 50 warm-up steps
            g["lr"] = a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))) * min(1.0, (step + 1) / 50)
        idx = torch.randint(len(frames), (a.batch,), generator=gen)
        loss = reconstruction_loss(decode_tokens(vq, tokens[idx]), frames[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            print(f"step {step} loss {loss.item():.4f} t {time.monotonic() - start:.0f}s", flush=True)
    vq.eval()
    assert torch.equal(frame_tokens(vq, val_clips), val_tokens)  # the encoder and codebook did not move
    real, through = classifier_accuracy(vq, classifier, a.classifier_clips)
    print(f"after: val PSNR {psnr(vq, val_frames, val_tokens):.2f} dB  classifier {real:.3f} real, "
          f"{through:.3f} through the VQ", flush=True)
    path = vq.save_pretrained(a.out, "vq")
    print(f"saved {path}; {step} steps, {(time.monotonic() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
