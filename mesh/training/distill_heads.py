"""Distil XSpecMesh-style draft heads from the trained mesh GPT (the core's DraftHeads / distill_heads).

Each head reads the backbone's last hidden state at position t and learns the frozen backbone's own distribution
at t + 1 + k (KL, teacher forcing) on fresh training shapes, so its drafts are what the backbone would sample;
verification by the exact rule keeps the output the backbone's either way.

    nice -n 5 python -m mmaccel.mesh.training.distill_heads --model mesh/weights --minutes 8

``--hinted`` distils hinted heads (:mod:`mmaccel.drafting.heads`): each head also reads the face-structure copy
(:class:`~mmaccel.mesh.face_init.FaceInit`) of the token it drafts; ``--init`` may name plain heads, whose weights
it then starts from (the hint embedding starts as a copy prior, ``--hint-boost``; 0 starts it at zero). Heads
``--init`` names that are hinted stay hinted.

Before and after training it prints the heads' held-out acceptance (:func:`heads_acceptance`, on the GPT's own
validation shapes, which neither the GPT nor the heads train on); ``--eval-only`` prints it and trains nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from mmaccel.checkpoint import load_checked, read_state_dict
from mmaccel.drafting.heads import DraftHeads, distill_heads, teacher_hints
from mmaccel.io import write_atomic
from mmaccel.mesh.face_init import FaceInit
from mmaccel.mesh.model import load_mesh_gpt
from mmaccel.mesh.training.train_gpt import TRAIN_SEED, VAL_SEED, sorted_batches
from mmaccel.models import TokenModel

HEADS_SEED = TRAIN_SEED + 500_000  # shapes the GPT never saw
#: The sampling temperature of the default settings (mmaccel.mesh.pipeline.DEFAULTS), at which acceptance is judged.
EVAL_TEMPERATURE = 0.7
#: Tokens before the first generated one in the training sequences: ``[class, bos]``.
PROMPT_LENGTH = 2


def face_hints(model: TokenModel, heads: DraftHeads):
    """The teacher-forced hint map of hinted mesh heads (None for plain heads)."""
    if not heads.hinted:
        return None
    init = FaceInit(model.vocab.levels, model.vocab.eos)
    return lambda tokens: teacher_hints(init, tokens, PROMPT_LENGTH, heads.num_heads)


@torch.no_grad()
def heads_acceptance(
    model: TokenModel, heads: DraftHeads, batches: list[torch.Tensor], eos: int, temperature: float = EVAL_TEMPERATURE
) -> dict[str, float | list[float]]:
    """Held-out acceptance of the heads under the exact rule, teacher forced.

    Head ``j`` at position ``t`` drafts token ``t + 2 + j`` from ``q_j``; the exact rule accepts it with
    probability ``sum_x min(p(x), q_j(x))``, ``p`` the target's distribution at ``t + 1 + j`` (both at
    ``temperature``, unguided, unmasked). ``per_head`` averages that over the positions whose drafted token lies
    inside the mesh (up to its first ``eos``); ``tokens_per_step`` is ``1 + sum_k prod_{j<=k} a_j`` averaged over
    positions, the tokens one verify step would commit if the heads' acceptances were independent.
    """
    k = heads.num_heads
    hints = face_hints(model, heads)
    accept_sum, accept_n, chain_sum, chain_n = torch.zeros(k), torch.zeros(k), 0.0, 0
    for tokens in batches:
        b, t = tokens.shape
        cache = model.new_cache(b, t)
        out = model.forward(tokens, torch.arange(t).expand(b, t), cache, output_hidden=True)
        p = (out.logits.float() / temperature).softmax(-1)  # [B, T, V]: distribution of token t + 1
        hint = hints(tokens) if hints is not None else None
        q = (heads(out.hidden.float(), hint) / temperature).softmax(-1)  # [B, T, K, V]: token t + 2 + j
        span = t - 1 - k
        overlap = torch.stack([torch.minimum(p[:, 1 + j : 1 + j + span], q[:, :span, j]).sum(-1) for j in range(k)], -1)
        hit = tokens == eos
        first_eos = torch.where(hit[:, 2:].any(1), hit[:, 2:].int().argmax(1) + 2, t)  # [B]
        drafted = torch.arange(span)[None, :, None] + 2 + torch.arange(k)[None, None]  # index of each drafted token
        inside = drafted <= first_eos[:, None, None]
        accept_sum += (overlap * inside).sum((0, 1))
        accept_n += inside.sum((0, 1))
        rows = inside[..., 0]  # positions whose first draft is inside the mesh
        chain = (overlap * inside).cumprod(-1).sum(-1)
        chain_sum += float(chain[rows].sum())
        chain_n += int(rows.sum())
    return {"per_head": (accept_sum / accept_n).tolist(), "tokens_per_step": 1 + chain_sum / chain_n}


def format_acceptance(figures: dict) -> str:
    heads = " ".join(f"{a:.3f}" for a in figures["per_head"])
    return f"held-out acceptance per head {heads}  tokens per step {figures['tokens_per_step']:.3f}"


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
    parser.add_argument("--hinted", action="store_true", help="heads that read the face-structure copy of their token")
    parser.add_argument("--hint-boost", type=float, default=3.0, help="the hint's initial logit boost (copy prior)")
    parser.add_argument("--out", default=None, help="folder to write heads.safetensors to (default: --model)")
    parser.add_argument("--eval-only", action="store_true", help="print the held-out acceptance of --init's heads")
    parser.add_argument(
        "--first-shard", type=int, default=0,
        help="start at this shard of the heads' shapes (a continued run passes the last run's count, so it sees new ones)",
    )
    parser.add_argument("--eval-shapes", type=int, default=96, help="held-out shapes for the acceptance figures")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_mesh_gpt(args.model)
    for p in model.model.parameters():
        p.requires_grad_(False)
    state = None
    if args.init:  # e.g. the heads of the checkpoint a continued GPT training started from
        path = Path(args.init) / "heads.safetensors"
        state = read_state_dict(path)
    hinted = args.hinted or (state is not None and "hint.weight" in state)
    heads = DraftHeads(model.hidden_size, model.vocab_size, args.heads, args.layers, hinted=hinted)
    plain_start = hinted and (state is None or "hint.weight" not in state)  # the hint embedding is new
    if state is not None:
        load_checked(heads, state, str(path), ignore_missing=("hint.",) if plain_start else ())
        print(f"heads start from {path}" + (" (plain heads; hint embedding: copy prior)" if plain_start else ""), flush=True)
    else:
        heads.init_from_output(model.model.lm_head.weight)
    if plain_start:
        heads.init_hint_from_output(model.model.lm_head.weight, args.hint_boost)
    gen = torch.Generator().manual_seed(0)
    held_out = list(sorted_batches(args.eval_shapes, 32, VAL_SEED, model.vocab, torch.Generator(), dropout=0.0))
    print(f"before: {format_acceptance(heads_acceptance(model, heads, held_out, model.vocab.eos))}", flush=True)
    if args.eval_only:
        return
    deadline = start + args.minutes * 60 - 15

    def batches():
        shard = args.first_shard
        while time.perf_counter() < deadline:
            yield from sorted_batches(4 * args.batch_size, args.batch_size, HEADS_SEED + shard, model.vocab, gen)
            shard += 1

    losses = distill_heads(model, heads, batches(), lr=args.lr, hints=face_hints(model, heads))
    last = losses[-50:]
    shards = -(-len(losses) // 4) + args.first_shard  # 4 batches a shard
    print(
        f"final: batches {len(losses)} (shards {args.first_shard}-{shards - 1})  first loss {losses[0]:.4f}  "
        f"last-50 mean {sum(last) / len(last):.4f}"
    )
    print(f"after: {format_acceptance(heads_acceptance(model, heads, held_out, model.vocab.eos))}", flush=True)
    out = Path(args.out or args.model)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "heads.safetensors"
    state = {k: v.detach().contiguous() for k, v in heads.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, tmp))
    print(
        f"saved {path}; {args.heads} {'hinted ' if heads.hinted else ''}heads x {args.layers} layers; total {(time.perf_counter() - start) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
