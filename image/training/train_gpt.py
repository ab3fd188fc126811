"""Train the image default model's class-conditional GPT and its draft model on a CPU.

The GPT is LlamaGen's c2i model (Sun et al. 2024, see :mod:`mmaccel.image.llamagen`) at a small size,
trained with next-token cross-entropy on 16x16 token grids of the procedural class images of
:mod:`mmaccel.data.scenes`, encoded by the trained VQ tokenizer (``weights/vq.safetensors``). Class labels
are dropped to the null class with probability 0.1, as in LlamaGen, so classifier-free guidance works.

The draft model (same architecture, much smaller) is distilled from the trained GPT: on the same data it
minimises KL(p_target || q_draft) over every position at temperature 1 (as in DistillSpec, Zhou et al.
2024), which is what raises the acceptance rate of speculative sampling, sum_x min(p, q) per token.

    python -m mmaccel.image.training.train_gpt --out image/weights --minutes 35
    python -m mmaccel.image.training.train_gpt --out image/weights --draft --minutes 15

Both runs finish within ``--minutes`` (data encoding included; encoded tokens are cached under
``runs/gpt_tokens``), print train/val loss and the mean per-token entropy of the sampling distribution,
and write a PNG grid of AR samples (one row per class) to check by eye.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mmaccel.checkpoint import load_checked, read_state_dict
from mmaccel.data.scenes import CLASS_NAMES, NUM_CLASSES, make_dataset
from mmaccel.image.defaults import GPT_STYLE
from mmaccel.image.llamagen import GPTConfig, LlamaGenGPT, LlamaGenModel, gpt_config, load_llamagen
from mmaccel.image.training.train_tokenizer import to_tensor, to_uint8
from mmaccel.models.vq import VQModel
from mmaccel.models import CFGModel
from mmaccel.sampling import SampleRNG, sample

# make_dataset seeds reserved for the GPT (tokenizer 1000/1001, classifier 2000/2001): training shard i
# uses TRAIN_SEED + i, validation VAL_SEED.
TRAIN_SEED = 3000
VAL_SEED = 3999
SHARD_SIZE = 2000
CLASS_DROPOUT = 0.1


# ------------------------------------------------------------------------------------------------ data


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@torch.no_grad()
def encode_images(vq: VQModel, images: np.ndarray, batch: int = 250) -> torch.Tensor:
    """uint8 images [N, H, W, 3] -> raster-order token ids int16 [N, h * w]."""
    out = [vq.encode(to_tensor(images[i : i + batch])).flatten(1) for i in range(0, len(images), batch)]
    return torch.cat(out).to(torch.int16)


def encoded_dataset(
    vq: VQModel, vq_path: Path, n_images: int, seed: int, cache_dir: Path, style: str = GPT_STYLE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens int16 [n, 256] and labels int64 [n] of ``n_images`` class images, in shards of SHARD_SIZE.

    Shard ``i`` is ``make_dataset(SHARD_SIZE, seed + i, style=style)``; each is cached under ``cache_dir``
    so a new tokenizer never reuses stale tokens.
    """
    # The key holds the tokenizer's digest and a digest of a few rendered images, so neither a new tokenizer
    # nor a change to the scene generator can reuse stale tokens.
    probe = hashlib.sha256(make_dataset(4, seed=0, size=64, style=style)[0].tobytes()).hexdigest()[:8]
    folder = cache_dir / f"{_file_digest(vq_path)}_{style}{probe}"
    folder.mkdir(parents=True, exist_ok=True)
    tokens, labels = [], []
    for shard in range(math.ceil(n_images / SHARD_SIZE)):
        size = min(SHARD_SIZE, n_images - shard * SHARD_SIZE)
        path = folder / f"seed{seed + shard}_n{size}.pt"
        if path.is_file():
            data = torch.load(path, weights_only=True)
        else:
            images, shard_labels = make_dataset(size, seed=seed + shard, size=64, style=style)
            data = {"tokens": encode_images(vq, images), "labels": torch.from_numpy(shard_labels)}
            torch.save(data, path)
        tokens.append(data["tokens"])
        labels.append(data["labels"])
    return torch.cat(tokens), torch.cat(labels)


def random_dataset(n: int, config: GPTConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in data with some structure (each class a noisy repeat of its own token row) for smoke tests."""
    # The per-class rows come from a fixed seed so that train and val sets share them.
    base = torch.randint(
        config.vocab_size, (config.num_classes, config.block_size), generator=torch.Generator().manual_seed(0)
    )
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(config.num_classes, (n,), generator=g)
    noise = torch.randint(config.vocab_size, (n, config.block_size), generator=g)
    keep = torch.rand(n, config.block_size, generator=g) < 0.8
    return torch.where(keep, base[labels], noise).to(torch.int16), labels


# ------------------------------------------------------------------------------------------- training


def drop_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Replace each label by the null class (``num_classes``) with probability CLASS_DROPOUT."""
    drop = torch.rand(labels.shape, generator=generator) < CLASS_DROPOUT
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL(teacher || student), both at temperature 1."""
    log_q = student_logits.flatten(0, 1).log_softmax(-1)
    log_p = teacher_logits.flatten(0, 1).log_softmax(-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


@torch.no_grad()
def evaluate(
    gpt: LlamaGenGPT, tokens: torch.Tensor, labels: torch.Tensor, teacher: LlamaGenGPT | None = None, batch: int = 64
) -> dict[str, float]:
    """Val cross-entropy, mean per-token entropy of softmax(logits) (temperature 1), and with a teacher its
    own loss and entropy, KL(teacher || model) and the expected speculative acceptance sum_x min(p, q)."""
    gpt.eval()
    sums = dict.fromkeys(("loss", "entropy", "kl", "accept", "target_loss", "target_entropy"), 0.0)
    count = 0
    for i in range(0, len(tokens), batch):
        x, y = tokens[i : i + batch].long(), labels[i : i + batch]
        logits = gpt(y, x[:, :-1])
        logp = logits.log_softmax(-1)
        sums["loss"] += float(F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="sum"))
        sums["entropy"] += float(-(logp.exp() * logp).sum())
        if teacher is not None:
            teacher_logits = teacher(y, x[:, :-1])
            teacher_logp = teacher_logits.log_softmax(-1)
            sums["target_loss"] += float(F.cross_entropy(teacher_logits.flatten(0, 1), x.flatten(), reduction="sum"))
            sums["target_entropy"] += float(-(teacher_logp.exp() * teacher_logp).sum())
            sums["kl"] += float((teacher_logp.exp() * (teacher_logp - logp)).sum())
            sums["accept"] += float(torch.minimum(teacher_logp.exp(), logp.exp()).sum())
        count += x.numel()
    return {k: v / count for k, v in sums.items() if teacher is not None or k in ("loss", "entropy")}


def train(
    gpt: LlamaGenGPT,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor],
    seconds: float,
    teacher: LlamaGenGPT | None = None,
    batch_size: int = 16,
    lr: float = 2e-3,
    warmup: int = 50,
    eval_every_s: float | None = None,
    seed: int = 0,
    checkpoint: Callable[[LlamaGenGPT], object] | None = None,
) -> dict[str, float]:
    """Train for ``seconds`` of wall time (cosine learning rate over that time); returns the last figures.

    With a ``teacher`` the loss is distillation onto the teacher's logits, else next-token cross-entropy.
    Progress is printed every ``eval_every_s`` seconds (default: eight times per run), and ``checkpoint``,
    if given, is called with the model then, so a long run can be looked at before it ends.
    """
    eval_every_s = eval_every_s or max(30.0, seconds / 8)
    decay = [p for p in gpt.parameters() if p.dim() >= 2]
    no_decay = [p for p in gpt.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=True)
    gen = torch.Generator().manual_seed(seed)
    n_classes = gpt.config.num_classes
    start = last_eval = time.perf_counter()
    step, seen, running = 0, 0, None
    order = torch.randperm(len(tokens), generator=gen)
    cursor = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(tokens), generator=gen), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        x, y = tokens[idx].long(), drop_labels(labels[idx], n_classes, gen)
        # Linear warmup, then cosine to 10% of the peak over the wall-clock budget.
        progress = min(elapsed / seconds, 1.0)
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        gpt.train()
        logits = gpt(y, x[:, :-1])
        if teacher is None:
            loss = F.cross_entropy(logits.flatten(0, 1), x.flatten())
        else:
            with torch.no_grad():
                target = teacher(y, x[:, :-1])
            loss = distill_loss(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), 1.0)
        opt.step()
        step += 1
        seen += len(idx)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        now = time.perf_counter()
        if now - last_eval >= eval_every_s:
            figures = evaluate(gpt, val[0][:64], val[1][:64], teacher)
            tok_s = seen * tokens.shape[1] / (now - start)
            print(
                f"  {(now - start) / 60:5.1f} min  step {step}  seqs {seen}  {tok_s:.0f} tok/s  "
                f"train {running:.4f}  " + "  ".join(f"val_{k} {v:.4f}" for k, v in figures.items()),
                flush=True,
            )
            if checkpoint is not None:
                checkpoint(gpt)
            last_eval = time.perf_counter()
    gpt.eval()
    return {"steps": step, "sequences": seen, "train_loss": running or float("nan"), "train_s": seconds}


# ------------------------------------------------------------------------------------------- checking


@torch.no_grad()
def sample_tokens(gpt: LlamaGenGPT, labels: torch.Tensor, cfg_scale: float, seed: int = 0) -> torch.Tensor:
    """Plain AR sampling at temperature 1 with classifier-free guidance: token grids [B, block_size]."""
    inner = LlamaGenModel(gpt)
    model = CFGModel(inner, cfg_scale)
    n = gpt.config.block_size
    cache = model.new_cache(len(labels), 1 + n)
    rng = SampleRNG([seed + i for i in range(len(labels))])
    logits = model.prefill(inner.class_prompt(labels), cache).logits[:, 0]
    out = torch.empty(len(labels), n, dtype=torch.long)
    for i in range(n):
        out[:, i] = sample(logits.softmax(-1), rng.uniform(1)[:, 0])
        if i + 1 < n:
            positions = torch.full((len(labels), 1), 1 + i)
            logits = model.forward(out[:, i : i + 1], positions, cache).logits[:, 0]
    return out


def save_sample_grid(
    gpt: LlamaGenGPT, vq: VQModel, path: Path, per_class: int = 6, cfg_scale: float = 2.0, seed: int = 0
) -> None:
    """One row per class (in class order) of ``per_class`` AR samples, decoded by ``vq``; a PNG."""
    from PIL import Image

    labels = torch.arange(gpt.config.num_classes).repeat_interleave(per_class)
    tokens = sample_tokens(gpt, labels, cfg_scale, seed)
    g = gpt.config.grid_size
    images = to_uint8(vq.decode_code(tokens.view(-1, g, g)))
    h, w = images.shape[1:3]
    grid = images.reshape(gpt.config.num_classes, per_class, h, w, 3).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(gpt.config.num_classes * h, per_class * w, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def save_model(gpt: LlamaGenGPT, out: Path, name: str) -> Path:
    """``<name>.safetensors`` (float32) and ``<name>_config.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in gpt.state_dict().items()}, str(path))
    gpt.config.save(out / f"{name}_config.json")
    return path


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="image/weights", help="directory for the weights (and vq.safetensors)")
    parser.add_argument("--minutes", type=float, default=35.0, help="wall-clock budget, data encoding included")
    parser.add_argument("--draft", action="store_true", help="distil the draft model from <out>/gpt.safetensors")
    parser.add_argument("--config", default=None, help="named GPT config (default GPT-Mini, or GPT-Draft)")
    parser.add_argument("--vq", default=None, help="VQ weights (default <out>/vq.safetensors)")
    parser.add_argument("--images", type=int, default=12000, help="training images")
    parser.add_argument("--val-images", type=int, default=256, help="validation images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    parser.add_argument("--cfg", type=float, default=2.0, help="guidance scale of the sample grid")
    parser.add_argument("--grid", default=None, help="sample grid PNG (default runs/<name>_samples.png)")
    parser.add_argument("--cache", default="runs/gpt_tokens", help="folder for the encoded-token cache")
    parser.add_argument("--random-tokens", action="store_true", help="smoke test: random tokens, no VQ")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", default=None, help="continue training from these weights (same config)")
    parser.add_argument(
        "--style", default=GPT_STYLE, help="class-image style (mmaccel.data.scenes.CLASS_STYLES) to learn"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    budget = args.minutes * 60
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    name = "draft" if args.draft else "gpt"
    config_name = args.config or ("GPT-Draft" if args.draft else "GPT-Mini")
    lr = args.lr or 2e-3

    vq = None
    if args.random_tokens:
        config = gpt_config(config_name, num_classes=NUM_CLASSES)
        tokens, labels = random_dataset(args.images, config, args.seed)
        val = random_dataset(args.val_images, config, args.seed + 1)
        source = "random tokens (smoke test)"
    else:
        vq_path = Path(args.vq) if args.vq else out / "vq.safetensors"
        if not vq_path.is_file():
            raise SystemExit(f"VQ weights not found: {str(vq_path)!r} (train them first, or pass --vq)")
        vq = VQModel.from_pretrained(vq_path)
        grid = 64 // vq.config.downsample
        config = gpt_config(
            config_name, vocab_size=vq.config.codebook_size, block_size=grid * grid, num_classes=NUM_CLASSES
        )
        tokens, labels = encoded_dataset(vq, vq_path, args.images, TRAIN_SEED, Path(args.cache), args.style)
        val = encoded_dataset(vq, vq_path, args.val_images, VAL_SEED, Path(args.cache), args.style)
        source = (
            f"{args.images} train / {args.val_images} val {args.style!r} images of mmaccel.data.scenes.make_dataset "
            f"(64x64, seeds {TRAIN_SEED}+shard / {VAL_SEED}), tokens of {vq_path.name} ({_file_digest(vq_path)})"
        )
    print(f"data: {source}; ready after {time.perf_counter() - start:.0f}s", flush=True)

    teacher = None
    if args.draft:
        teacher = load_llamagen(out / "gpt.safetensors")
        if (teacher.config.vocab_size, teacher.config.block_size) != (config.vocab_size, config.block_size):
            raise SystemExit(f"target {out / 'gpt.safetensors'} does not match the data's vocab/grid")
        for p in teacher.parameters():
            p.requires_grad_(False)
    gpt = LlamaGenGPT(config)
    if args.init:
        load_checked(gpt, read_state_dict(args.init), args.init)
        print(f"continuing from {args.init}", flush=True)
    n_params = sum(p.numel() for p in gpt.parameters())
    print(f"{name}: {config_name} {n_params / 1e6:.2f}M params, {config.to_dict()}", flush=True)

    # Keep time for the final evaluation, the sample grid and saving (roughly in that proportion).
    reserve = 30 + budget * 0.03
    train_s = budget - reserve - (time.perf_counter() - start)
    if train_s < 30:
        raise SystemExit(f"--minutes {args.minutes} leaves {train_s:.0f}s for training; give more time")
    result = train(
        gpt,
        tokens,
        labels,
        val,
        train_s,
        teacher=teacher,
        batch_size=args.batch_size,
        lr=lr,
        seed=args.seed,
        checkpoint=lambda model: save_model(model, Path(args.cache).parent, f"{name}_latest"),
    )
    figures = evaluate(gpt, *val, teacher=teacher)
    ar_line = "  ".join(f"val_{k} {v:.4f}" for k, v in figures.items())
    print(
        f"final: steps {result['steps']}  sequences {result['sequences']}  train {result['train_loss']:.4f}  "
        f"{ar_line}  (val entropy is per token, nats, temperature 1; uniform = {math.log(config.vocab_size):.2f})",
        flush=True,
    )

    path = save_model(gpt, out, name)
    print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    if vq is not None:
        grid_path = Path(args.grid or f"runs/{name}_samples.png")
        save_sample_grid(gpt, vq, grid_path, cfg_scale=args.cfg, seed=args.seed)
        print(f"sample grid (rows: {', '.join(CLASS_NAMES)}; cfg {args.cfg}): {grid_path}", flush=True)
    print(f"total {(time.perf_counter() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
