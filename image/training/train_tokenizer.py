"""Train the image default model's VQ tokenizer (``VQ-small``: 64x64 images -> 16x16 tokens) on a CPU.

Data are the procedural class images of ``mmaccel.data.scenes``. Losses are LlamaGen's minus the GAN
and LPIPS terms (Sun et al. 2024): L1 + L2 reconstruction, an L1 loss on image gradients as a cheap
edge-sharpness term, and the codebook and commitment losses of the l2-normalised quantiser. Codes left
unused are restarted on current encoder outputs (as in Jukebox, Dhariwal et al. 2020) so that most of
the codebook ends up in use.

    python -m mmaccel.image.training.train_tokenizer --out image/weights --minutes 25
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from mmaccel.data.scenes import make_dataset
from mmaccel.models.vq import VQConfig, VQModel, reconstruction_loss

# Seeds of mmaccel.data.scenes.make_dataset used here; the classifier and the GPT use other seeds.
TRAIN_SEED = 1000
EVAL_SEED = 1001


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [-1, 1] [N, 3, H, W]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [-1, 1] [N, 3, H, W] -> uint8 [N, H, W, 3]."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def _restart_dead_codes(model: VQModel, counts: torch.Tensor, latents: torch.Tensor) -> int:
    """Point every code with zero recent uses at a random recent latent; returns how many moved."""
    dead = (counts == 0).nonzero().flatten()
    if len(dead) == 0 or len(latents) == 0:
        return 0
    pick = latents[torch.randint(len(latents), (len(dead),))]
    pick = pick + 0.01 * torch.randn_like(pick)
    weight = model.quantize.embedding.weight
    weight[dead] = F.normalize(pick, dim=-1) if model.config.codebook_l2_norm else pick
    return len(dead)


@torch.no_grad()
def evaluate(model: VQModel, images: torch.Tensor, batch: int = 64) -> dict[str, float]:
    """Reconstruction MSE/PSNR (pixels in [0, 1]) and codebook usage on ``images`` [N, 3, H, W]."""
    model.eval()
    sq_err, n_pix, used = 0.0, 0, []
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        idx = model.encode(x)
        rec = model.decode_code(idx)
        sq_err += float(((rec - x) / 2).pow(2).sum())
        n_pix += x.numel()
        used.append(idx.flatten())
    mse = sq_err / n_pix
    idx = torch.cat(used)
    counts = torch.bincount(idx, minlength=model.config.codebook_size).float()
    p = counts / counts.sum()
    perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    return {
        "mse": mse,
        "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "usage": float((counts > 0).float().mean()),
        "perplexity": perplexity,
    }


def save_grid(originals: torch.Tensor, recons: torch.Tensor, path: str, per_row: int = 8) -> None:
    """Rows alternate originals and reconstructions; written as a PNG."""
    from PIL import Image

    a, b = to_uint8(originals[: per_row * 4]), to_uint8(recons[: per_row * 4])
    n, h, w, _ = a.shape
    rows = []
    for r in range(0, n, per_row):
        rows.append(np.concatenate(list(a[r : r + per_row]), axis=1))
        rows.append(np.concatenate(list(b[r : r + per_row]), axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def train(
    out: str,
    minutes: float,
    config: VQConfig,
    n_images: int = 20000,
    batch_size: int = 16,
    lr: float = 5e-4,
    seed: int = 0,
    grid_path: str | None = None,
    log_every: int = 50,
    crop: int = 32,
    crop_fraction: float = 0.6,
    init: str | None = None,
) -> dict[str, float]:
    """Train for ``minutes`` of wall time (data generation included); save and return eval metrics.

    The first ``crop_fraction`` of the time trains on random ``crop`` x ``crop`` patches (the network is
    convolutional, so a patch costs a fraction of an image and the model sees more edges per second);
    the rest trains on whole images so attention and normalisation see the full-size statistics.
    ``init`` continues from saved weights (a file or directory readable by ``VQModel.from_pretrained``).
    """
    start = time.time()
    deadline = start + minutes * 60
    torch.manual_seed(seed)
    images, _ = make_dataset(n_images, seed=TRAIN_SEED, size=config.image_size)
    eval_images = to_tensor(make_dataset(512, seed=EVAL_SEED, size=config.image_size)[0])
    print(f"data: {n_images} train images in {time.time() - start:.0f}s", flush=True)

    model = VQModel.from_pretrained(init, config=config).train() if init else VQModel(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.95))
    # Hold back time for the final evaluation and for saving.
    train_end = deadline - min(60.0, 0.1 * minutes * 60)
    train_start = time.time()
    rng = np.random.default_rng(seed)
    counts = torch.zeros(config.codebook_size)
    step, epoch_order, pos = 0, rng.permutation(n_images), 0
    while time.time() < train_end:
        progress = (time.time() - train_start) / max(train_end - train_start, 1e-6)
        patches = crop and crop < config.image_size and progress < crop_fraction
        # A patch batch costs about (crop / size)^2 of an image batch, so it can hold more samples.
        n = batch_size * (config.image_size // crop) ** 2 // 2 if patches else batch_size
        if pos + n > n_images:
            epoch_order, pos = rng.permutation(n_images), 0
        x = to_tensor(images[epoch_order[pos : pos + n]])
        pos += n
        if patches:
            f = config.downsample  # crop on the token grid so patches tokenise like whole images
            oy, ox = (int(v) * f for v in rng.integers(0, (config.image_size - crop) // f + 1, 2))
            x = x[:, :, oy : oy + crop, ox : ox + crop]
        # Linear warm-up, then cosine decay to 10% over the wall-clock budget.
        scale = min(1.0, (step + 1) / 100) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))
        for group in opt.param_groups:
            group["lr"] = lr * scale

        model.train()
        latent = model.encode_latent(x)
        quant, q_losses, idx = model.quantize(latent)
        rec = model.decode(quant)
        rec_loss = reconstruction_loss(rec, x)
        loss = rec_loss + q_losses["vq"] + q_losses["commit"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        counts += torch.bincount(idx.flatten(), minlength=config.codebook_size).float()
        step += 1
        if step % 100 == 0 and progress < 0.8:
            flat = latent.detach().permute(0, 2, 3, 1).reshape(-1, config.codebook_embed_dim)
            moved = _restart_dead_codes(model, counts, flat)
            live = int((counts > 0).sum())
            counts.zero_()
        else:
            moved = None
        if step % log_every == 0:
            msg = (
                f"step {step} t={time.time() - start:.0f}s lr={lr * scale:.2e} loss={loss.item():.4f} "
                f"rec={rec_loss.item():.4f} vq={q_losses['vq'].item():.4f}"
            )
            if moved is not None:
                msg += f" live_codes={live} restarted={moved}"
            print(msg, flush=True)

    metrics = evaluate(model, eval_images)
    model.save_pretrained(out, name="vq")
    print(
        f"done: {step} steps in {(time.time() - start) / 60:.1f} min; held-out recon "
        f"MSE={metrics['mse']:.5f} PSNR={metrics['psnr']:.2f} dB; codebook usage "
        f"{metrics['usage'] * 100:.1f}% of {config.codebook_size} (perplexity {metrics['perplexity']:.0f}); "
        f"saved {os.path.join(out, 'vq.safetensors')}",
        flush=True,
    )
    if grid_path:
        with torch.no_grad():
            rec = model.decode_code(model.encode(eval_images[:32]))
        save_grid(eval_images[:32], rec, grid_path)
        print(f"reconstruction grid: {grid_path}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="image/weights", help="directory for vq.safetensors + vq_config.json")
    parser.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget, data generation included")
    parser.add_argument("--config", default="VQ-small", help="named VQConfig (VQ-small, VQ-tiny, ...)")
    parser.add_argument("--images", type=int, default=20000, help="number of training images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default=None, help="continue from these weights (file or directory)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads; use 1 when other jobs share the cores (OpenMP stalls otherwise)",
    )
    parser.add_argument("--crop", type=int, default=32, help="patch size for the first phase (0 = no patches)")
    parser.add_argument("--crop-fraction", type=float, default=0.6, help="share of the time spent on patches")
    parser.add_argument("--grid", default="runs/vq_recon.png", help="PNG of originals/reconstructions ('' = none)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    torch.set_num_threads(args.threads)
    if args.grid:
        os.makedirs(os.path.dirname(args.grid) or ".", exist_ok=True)
    train(
        args.out,
        args.minutes,
        VQConfig.named(args.config),
        n_images=args.images,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        grid_path=args.grid or None,
        crop=args.crop,
        crop_fraction=args.crop_fraction,
        init=args.init,
    )


if __name__ == "__main__":
    main()
