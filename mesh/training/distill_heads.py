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
validation shapes, which neither the GPT nor the heads train on), for sampled drafts (``xspec``) and for each
head's most likely token (``xspec:branch=top``); ``--eval-only`` prints it and trains nothing.

``--pool FILE`` self-distils (Medusa-2): it trains on the GPT's own samples (:mod:`.sample_pool`) instead of
fresh shapes, holds out the pool's last ``--eval-shapes`` rows for the acceptance figures, and ignores
``--first-shard``. ``--guidance`` and ``--structure-mask`` make the target the one a decoder samples at those
settings (:func:`~mmaccel.drafting.heads.decoding_teacher`), in training and in the figures alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from mmaccel.checkpoint import load_checked, read_state_dict
from mmaccel.drafting.heads import (
    DraftHeads, bare_teacher, decoding_teacher, deepened_state, distill_heads, heads_state_layers, teacher_hints,
)
from mmaccel.io import write_atomic
from mmaccel.mesh.face_init import FaceInit
from mmaccel.mesh.grammar import mesh_target
from mmaccel.mesh.model import load_mesh_gpt
from mmaccel.mesh.training.sample_pool import load_pool
from mmaccel.mesh.training.train_gpt import TRAIN_SEED, VAL_SEED, sorted_batches
from mmaccel.models import ModelOutput, TokenModel

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
    model: TokenModel,
    heads: DraftHeads,
    batches: list[torch.Tensor],
    eos: int,
    temperature: float = EVAL_TEMPERATURE,
    teacher: Callable[[torch.Tensor], ModelOutput] | None = None,
    branches: tuple[str, ...] = ("sample",),
) -> dict[str, dict[str, float | list[float]]]:
    """Held-out acceptance of the heads under the exact rule, teacher forced, per drafting ``branch``.

    Head ``j`` at position ``t`` drafts token ``t + 2 + j`` from ``q_j``; the exact rule accepts it with
    probability ``sum_x min(p(x), q_j(x))`` (``"sample"``), or ``p(argmax q_j)`` for the most likely token
    (``"top"``), ``p`` the target's distribution at ``t + 1 + j`` (both at ``temperature``; the target is
    ``teacher``'s, by default the bare model: unguided, unmasked). ``per_head`` averages that over the positions
    whose drafted token lies inside the mesh (up to its first ``eos``); ``tokens_per_step`` is
    ``1 + sum_k prod_{j<=k} a_j`` averaged over positions, the tokens one verify step would commit if the heads'
    acceptances were independent. Every branch is scored on the same teacher forward.
    """
    k = heads.num_heads
    hints = face_hints(model, heads)
    teacher = teacher or bare_teacher(model)
    sums = {b: [torch.zeros(k), torch.zeros(k), 0.0, 0] for b in branches}  # accepted, drafts, chain, positions
    for tokens in batches:
        out = teacher(tokens)
        t = out.logits.shape[1]
        offset = tokens.shape[1] - t  # the teacher covers the row's last t positions
        p = (out.logits.float() / temperature).softmax(-1)  # [B, t, V]: distribution of the next token
        hint = hints(tokens)[:, offset:] if hints is not None else None
        q = (heads(out.hidden.float(), hint) / temperature).softmax(-1)  # [B, t, K, V]: token t + 2 + j
        span = t - 1 - k
        first_eos = end_of_mesh(tokens, eos)  # [B]
        drafted = offset + torch.arange(span)[None, :, None] + 2 + torch.arange(k)[None, None]  # each draft's index
        inside = drafted <= first_eos[:, None, None]
        rows = inside[..., 0]  # positions whose first draft is inside the mesh
        for branch in branches:
            if branch == "top":
                top = q[:, :span].argmax(-1, keepdim=True)  # [B, span, K, 1]
                overlap = torch.stack(
                    [p[:, 1 + j : 1 + j + span].gather(-1, top[:, :, j])[..., 0] for j in range(k)], -1
                )
            else:
                overlap = torch.stack(
                    [torch.minimum(p[:, 1 + j : 1 + j + span], q[:, :span, j]).sum(-1) for j in range(k)], -1
                )
            acc = sums[branch]
            acc[0] += (overlap * inside).sum((0, 1))
            acc[1] += inside.sum((0, 1))
            acc[2] += float((overlap * inside).cumprod(-1).sum(-1)[rows].sum())
            acc[3] += int(rows.sum())
    return {
        b: {"per_head": (a / n).tolist(), "tokens_per_step": 1 + chain / positions}
        for b, (a, n, chain, positions) in sums.items()
    }


def decoding_target(model: TokenModel, guidance_scale: float | None, structure_mask: bool):
    """The teacher of heads distilled for a decoder with these settings (None: the bare model)."""
    if guidance_scale is None and not structure_mask:
        return None
    scale = 1.0 if guidance_scale is None else guidance_scale
    return decoding_teacher(mesh_target(model, structure_mask, scale), PROMPT_LENGTH)


def pool_batches(tokens: torch.Tensor, batch_size: int, eos: int, generator: torch.Generator):
    """Endless shuffled batches of pool rows, rows of similar length together, each cut after its longest
    mesh's ``eos`` (plus one eos-to-eos step), so the padding after the meshes costs little."""
    ends = end_of_mesh(tokens, eos)
    group = 4 * batch_size
    while True:
        order = torch.randperm(len(tokens), generator=generator)
        for i in range(0, len(order) - batch_size + 1, group):
            idx = order[i : i + group]
            idx = idx[ends[idx].argsort(stable=True)]
            for j in range(0, len(idx) - batch_size + 1, batch_size):
                yield trimmed(tokens[idx[j : j + batch_size]], eos)


def trimmed(rows: torch.Tensor, eos: int) -> torch.Tensor:
    """``rows`` cut after their longest mesh's ``eos`` and one eos-to-eos step."""
    return rows[:, : min(int(end_of_mesh(rows, eos).max()) + 2, rows.shape[1])]


def end_of_mesh(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """``[N]``: the index of each row's first ``eos`` after the prompt (the row's length where there is none)."""
    hit = tokens[:, PROMPT_LENGTH:] == eos
    return torch.where(hit.any(1), hit.int().argmax(1) + PROMPT_LENGTH, tokens.shape[1])


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
    parser.add_argument("--init", default=None, help="start from the heads.safetensors in this folder (same heads; --layers may add residual blocks)")
    parser.add_argument("--hinted", action="store_true", help="heads that read the face-structure copy of their token")
    parser.add_argument("--hint-boost", type=float, default=3.0, help="the hint's initial logit boost (copy prior)")
    parser.add_argument("--out", default=None, help="folder to write heads.safetensors to (default: --model)")
    parser.add_argument("--eval-only", action="store_true", help="print the held-out acceptance of --init's heads")
    parser.add_argument(
        "--first-shard", type=int, default=0,
        help="start at this shard of the heads' shapes (a continued run passes the last run's count, so it sees new ones)",
    )
    parser.add_argument("--eval-shapes", type=int, default=96, help="held-out shapes for the acceptance figures")
    parser.add_argument(
        "--pool", default=None,
        help="train on this sample pool (mmaccel.mesh.training.sample_pool) instead of fresh shapes; its last "
        "--eval-shapes rows are held out for the acceptance figures",
    )
    parser.add_argument("--guidance", type=float, default=None, help="match the CFG-guided target at this scale")
    parser.add_argument("--structure-mask", action="store_true", help="match the target masked to the mesh grammar")
    parser.add_argument("--temperature", type=float, default=1.0, help="temperature of the distillation KL")
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
        try:
            layers = heads_state_layers(state)
            if layers != args.layers:  # wider heads start as the trained ones: the new blocks add nothing yet
                state = deepened_state(state, args.layers)
        except ValueError as err:
            sys.exit(f"distill_heads: --init {args.init!r} with --layers {args.layers}: {err}")
        load_checked(heads, state, str(path), ignore_missing=("hint.",) if plain_start else ())
        print(
            f"heads start from {path}"
            + (" (plain heads; hint embedding: copy prior)" if plain_start else "")
            + (f" ({layers} layer(s); the {args.layers - layers} new ones start as the identity)" if layers < args.layers else ""),
            flush=True,
        )
    else:
        heads.init_from_output(model.model.lm_head.weight)
    if plain_start:
        heads.init_hint_from_output(model.model.lm_head.weight, args.hint_boost)
    gen = torch.Generator().manual_seed(0)
    eos = model.vocab.eos
    teacher = decoding_target(model, args.guidance, args.structure_mask)
    if args.pool:
        pool, settings = load_pool(args.pool)
        if len(pool) <= args.eval_shapes + args.batch_size:
            sys.exit(
                f"distill_heads: --pool {args.pool!r} holds {len(pool)} rows, "
                f"too few for --eval-shapes {args.eval_shapes}"
            )
        print(f"pool {args.pool}: {len(pool)} rows sampled with {settings}", flush=True)
        pool, held = pool[: -args.eval_shapes], pool[-args.eval_shapes :]
        held = held[end_of_mesh(held, eos).argsort(stable=True)]
        held_out = [trimmed(held[i : i + 32], eos) for i in range(0, len(held), 32)]
    else:
        held_out = list(sorted_batches(args.eval_shapes, 32, VAL_SEED, model.vocab, torch.Generator(), dropout=0.0))
    target = "the decoding target" if teacher is not None else "the bare model"
    where = "held-out pool rows" if args.pool else "validation shapes"

    def acceptance() -> str:
        figures = heads_acceptance(model, heads, held_out, eos, teacher=teacher, branches=("sample", "top"))
        sampled, top = format_acceptance(figures["sample"]), format_acceptance(figures["top"])
        return f"{sampled}\n  top drafts (xspec:branch=top): {top}"

    print(f"acceptance against {target} on {where}", flush=True)
    print(f"before: {acceptance()}", flush=True)
    if args.eval_only:
        return
    deadline = start + args.minutes * 60 - 15

    def batches():
        if args.pool:
            for batch in pool_batches(pool, args.batch_size, eos, gen):
                if time.perf_counter() >= deadline:
                    return
                yield batch
        shard = args.first_shard
        while time.perf_counter() < deadline:
            yield from sorted_batches(4 * args.batch_size, args.batch_size, HEADS_SEED + shard, model.vocab, gen)
            shard += 1

    losses = distill_heads(
        model, heads, batches(), lr=args.lr, temperature=args.temperature, hints=face_hints(model, heads),
        teacher=teacher,
    )
    if not losses:  # nothing trained, so nothing is written over --out
        sys.exit(f"distill_heads: --minutes {args.minutes} left no time for a batch after the 'before' figures")
    last = losses[-50:]
    if args.pool:
        seen = f"{len(losses) * args.batch_size / len(pool):.1f} passes over the pool"
    else:
        seen = f"shards {args.first_shard}-{-(-len(losses) // 4) + args.first_shard - 1}"  # 4 batches a shard
    mean = sum(last) / len(last)
    print(f"final: batches {len(losses)} ({seen})  first loss {losses[0]:.4f}  last-50 mean {mean:.4f}")
    print(f"after: {acceptance()}", flush=True)
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
