"""Distil XSpecMesh-style draft heads from the trained mesh GPT (the core's DraftHeads / distill_heads).

Each head reads the backbone's last hidden state at position t and learns the frozen backbone's own distribution
at t + 1 + k (KL, teacher forcing) on fresh training shapes, so its drafts are what the backbone would sample;
verification by the exact rule keeps the output the backbone's either way.

    nice -n 5 python -m mmaccel.mesh.training.distill_heads --model mesh/weights --minutes 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from mmaccel.checkpoint import load_checked, read_state_dict
from mmaccel.drafting.heads import DraftHeads, distill_heads
from mmaccel.io import write_atomic
from mmaccel.mesh.model import load_mesh_gpt
from mmaccel.mesh.training.train_gpt import TRAIN_SEED, sorted_batches

HEADS_SEED = TRAIN_SEED + 500_000  # shapes the GPT never saw


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mesh/weights")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", default=None, help="start from the heads.safetensors in this folder (same shape)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_mesh_gpt(args.model)
    for p in model.model.parameters():
        p.requires_grad_(False)
    heads = DraftHeads(model.hidden_size, model.vocab_size, args.heads, args.layers)
    if args.init:  # e.g. the heads of the checkpoint a continued GPT training started from
        path = Path(args.init) / "heads.safetensors"
        load_checked(heads, read_state_dict(path), str(path))
        print(f"heads start from {path}", flush=True)
    else:
        heads.init_from_output(model.model.lm_head.weight)
    gen = torch.Generator().manual_seed(0)
    deadline = start + args.minutes * 60 - 15

    def batches():
        shard = 0
        while time.perf_counter() < deadline:
            yield from sorted_batches(4 * args.batch_size, args.batch_size, HEADS_SEED + shard, model.vocab, gen)
            shard += 1

    losses = distill_heads(model, heads, batches(), lr=args.lr)
    last = losses[-50:]
    print(f"final: batches {len(losses)}  first loss {losses[0]:.4f}  last-50 mean {sum(last) / len(last):.4f}")
    path = Path(args.model) / "heads.safetensors"
    state = {k: v.detach().contiguous() for k, v in heads.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, tmp))
    print(
        f"saved {path}; {args.heads} heads x {args.layers} layers; total {(time.perf_counter() - start) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
