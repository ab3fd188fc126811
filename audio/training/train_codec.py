"""Train the speech codec (log-mel residual VQ, :mod:`mmaccel.audio.codec`) on espeak-ng speech, on a CPU.

    python -m mmaccel.audio.training.train_codec --out audio/weights --minutes 8

Reconstruction loss on normalised log-mel plus the VQ codebook/commitment losses; unused codes are moved onto
random latents every 100 steps (the usual dead-code restart), so all 256 entries of each codebook stay in use.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mmaccel.audio.codec import CodecConfig, MelCodec
from mmaccel.audio.training.dataset import TRAIN_SEED, VAL_SEED, speech_set


def crops(mels: list[torch.Tensor], batch: int, frames: int, g: torch.Generator) -> torch.Tensor:
    picks = torch.randint(len(mels), (batch,), generator=g).tolist()
    out = []
    for i in picks:
        m = mels[i]
        start = int(torch.randint(max(len(m) - frames, 0) + 1, (1,), generator=g))
        piece = m[start : start + frames]
        out.append(F.pad(piece, (0, 0, 0, frames - len(piece)), value=float(m.min())))
    return torch.stack(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("audio/weights"))
    parser.add_argument("--cache", type=Path, default=Path("runs/speech_data"))
    parser.add_argument("--utterances", type=int, default=4000)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.time()
    train = speech_set(args.utterances, TRAIN_SEED, args.cache)
    val = speech_set(200, VAL_SEED, args.cache)
    print(f"data ready in {time.time() - start:.0f}s", flush=True)
    model = MelCodec(CodecConfig())
    every = torch.cat(train.mels)
    model.mel_mean.copy_(every.mean(0))
    model.mel_std.copy_(every.std(0).clamp(min=1e-3))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # codebooks start on latents (k-means style init), residual by residual
        z = model._latent(crops(train.mels, 64, 64, g)).reshape(-1, model.config.latent)
        for book in model.rvq.codebooks:
            book.copy_(z[torch.randperm(len(z), generator=g)[: book.shape[0]]])
            z = z - book[torch.cdist(z, book).argmin(-1)]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    deadline = start + args.minutes * 60
    step, usage = 0, torch.zeros(model.config.codebooks, model.config.codebook_size)
    while time.time() < deadline:
        mel = crops(train.mels, 32, 64, g)
        recon, codes, vq_loss = model(mel)
        loss = F.mse_loss((recon - model.mel_mean) / model.mel_std, (mel - model.mel_mean) / model.mel_std)
        opt.zero_grad()
        (loss + vq_loss).backward()
        opt.step()
        for k in range(codes.shape[-1]):
            usage[k] += torch.bincount(codes[..., k].flatten(), minlength=usage.shape[1])
        step += 1
        if step % 100 == 0:
            with torch.no_grad():
                z = model._latent(mel).reshape(-1, model.config.latent)
                for k, book in enumerate(model.rvq.codebooks):
                    dead = (usage[k] == 0).nonzero().squeeze(1)
                    if len(dead):
                        book[dead] = z[torch.randint(len(z), (len(dead),), generator=g)] + 0.01 * torch.randn(
                            len(dead), z.shape[1], generator=g
                        )
                    z = z - book[torch.cdist(z, book).argmin(-1)]
            usage.zero_()
        if step % 200 == 0:
            print(f"step {step} recon {loss.item():.4f} vq {vq_loss.item():.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        errors = [F.mse_loss(model.decode(model.encode(m[None]))[0], m).item() for m in val.mels[:100]]
    val_mse = sum(errors) / len(errors)
    print(f"done: {step} steps, val log-mel mse {val_mse:.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out / "codec.safetensors"))
    (args.out / "codec_config.json").write_text(json.dumps(model.config_dict(), indent=1))
    (args.out / "codec_train.json").write_text(
        json.dumps({"steps": step, "val_logmel_mse": val_mse, "minutes": args.minutes}, indent=1)
    )


if __name__ == "__main__":
    main()
