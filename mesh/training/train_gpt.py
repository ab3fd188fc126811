"""Train the default mesh model, a class-conditional Llama over face tokens, on a CPU within a wall-clock budget.

Data: fresh shapes of :mod:`mmaccel.mesh.data` every step (no epoch, so no overfitting), tokenised in the sorted
9-tokens-a-face layout as ``[class, bos, faces..., eos, eos...]``; the class is dropped to the null class with
probability 0.1 (LlamaGen), so classifier-free guidance works. Next-token cross-entropy over every position after
the class token, eos padding included: after the end the model learns to repeat eos.

    nice -n 5 python -m mmaccel.mesh.training.train_gpt --out mesh/weights --minutes 45 --threads 1

Prints the validation loss and the mean per-token entropy (nats, temperature 1) of a fixed held-out set (seed
``VAL_SEED``), and checkpoints to ``runs/mesh_gpt_latest`` as it goes.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from mmaccel.mesh.data import MAX_FACES, NUM_CLASSES, make_dataset
from mmaccel.mesh.model import load_mesh_gpt, mesh_config, save_mesh_gpt, with_face_slots
from mmaccel.mesh.tokenizer import MeshVocab, sequence
from mmaccel.models.slot_llama import new_llama

TRAIN_SEED = 100_000  # step s draws its shapes from seed TRAIN_SEED + s
VAL_SEED = 7  # the held-out shapes (the bench's reference set uses other seeds, see mesh/bench.py)
CLASS_DROPOUT = 0.1


def batch_tensor(tokens: list[np.ndarray], labels: np.ndarray, vocab: MeshVocab) -> torch.Tensor:
    """Sequences right-filled with eos to the longest one: ``[B, T]``."""
    length = max(len(t) for t in tokens) + 3
    return torch.from_numpy(np.stack([sequence(t, int(c), vocab, length) for t, c in zip(tokens, labels)]))


def sorted_batches(
    n: int, batch_size: int, seed: int, vocab: MeshVocab, generator: torch.Generator, dropout: float = CLASS_DROPOUT
):
    """``n`` fresh shapes cut into batches of similar length (less eos padding per batch), labels dropped to the
    null class with probability ``dropout``."""
    tokens, labels = make_dataset(n, seed, vocab.levels)
    order = np.argsort([len(t) for t in tokens], kind="stable")
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        x = batch_tensor([tokens[j] for j in idx], labels[idx], vocab)
        drop = torch.rand(len(idx), generator=generator) < dropout
        x[:, 0] = torch.where(drop, vocab.null_class, x[:, 0])
        yield x


def loss_of(model: LlamaForCausalLM, x: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x[:, :-1]).logits[:, 1:]  # position 0 (class) always predicts bos
    return F.cross_entropy(logits.flatten(0, 1).float(), x[:, 2:].flatten())


@torch.no_grad()
def evaluate(model: LlamaForCausalLM, val: list[torch.Tensor], vocab: MeshVocab) -> dict[str, float]:
    """Held-out loss and entropy per token up to and including the first eos (the padding after it excluded)."""
    model.eval()
    total, entropy, count = 0.0, 0.0, 0
    for x in val:
        logits = model(input_ids=x[:, :-1]).logits[:, 1:].float()
        target = x[:, 2:]
        first_eos = (target == vocab.eos).int().argmax(1)
        keep = torch.arange(target.shape[1])[None] <= first_eos[:, None]
        logp = logits.log_softmax(-1)
        nll = -logp.gather(-1, target[..., None])[..., 0]
        total += float(nll[keep].sum())
        entropy += float(-(logp.exp() * logp).sum(-1)[keep].sum())
        count += int(keep.sum())
    model.train()
    return {"loss": total / count, "entropy": entropy / count}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="mesh/weights")
    parser.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget, everything included")
    parser.add_argument("--config", default="mesh-small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default="runs/mesh_gpt_latest")
    parser.add_argument("--init", default=None, help="continue from this model folder (same config)")
    parser.add_argument(
        "--face-slots",
        action="store_true",
        help="add the face-slot embedding (the core's SlotLlama); with --init, to a plain GPT's weights, from zero",
    )
    parser.add_argument("--data-seed", type=int, default=TRAIN_SEED, help="first shard seed (continue with a new one)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    budget = args.minutes * 60 - 20
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    vocab = MeshVocab(128, NUM_CLASSES)
    config = mesh_config(args.config, vocab, MAX_FACES, face_slots=args.face_slots)
    model = new_llama(config)
    if args.init:
        model = load_mesh_gpt(args.init).model.train()
        if args.face_slots:
            model = with_face_slots(model)
        print(f"continuing from {args.init}{' with face slots' if args.face_slots else ''}", flush=True)
    print(f"{args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params", flush=True)
    gen = torch.Generator().manual_seed(args.seed)
    val = list(sorted_batches(288, 32, VAL_SEED, vocab, gen, dropout=0.0))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    step, seen, tokens_seen, running = 0, 0, 0, None
    last_eval = time.perf_counter()
    shard = 0
    model.train()
    while time.perf_counter() - start < budget:
        for x in sorted_batches(4 * args.batch_size, args.batch_size, args.data_seed + shard, vocab, gen):
            elapsed = time.perf_counter() - start
            if elapsed >= budget:
                break
            progress = min(elapsed / budget, 1.0)
            scale = min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
            for group in opt.param_groups:
                group["lr"] = args.lr * scale
            loss = loss_of(model, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            seen += len(x)
            tokens_seen += x.numel()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            if time.perf_counter() - last_eval > max(60.0, budget / 12):
                figures = evaluate(model, val[:3], vocab)
                print(
                    f"  {elapsed / 60:5.1f} min  step {step}  shapes {seen}  {tokens_seen / elapsed:.0f} tok/s  "
                    f"train {running:.4f}  val_loss {figures['loss']:.4f}  val_entropy {figures['entropy']:.4f}",
                    flush=True,
                )
                save_mesh_gpt(model, vocab, MAX_FACES, Path(args.checkpoint))
                last_eval = time.perf_counter()
        shard += 1
    model.eval()
    figures = evaluate(model, val, vocab)
    print(
        f"final: steps {step}  shapes {seen}  train {running:.4f}  val_loss {figures['loss']:.4f}  "
        f"val_entropy {figures['entropy']:.4f} (nats per token up to eos, temperature 1; uniform "
        f"{math.log(vocab.size):.2f})",
        flush=True,
    )
    path = save_mesh_gpt(model, vocab, MAX_FACES, Path(args.out))
    print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB); total {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
