"""Distil an EAGLE draft head (:mod:`mmaccel.drafting.eagle`) for the default image GPT on a CPU.

Data: the GPT's own generations, sampled with the default pipeline's settings (guidance 2.0, temperature 0.8,
plain AR, seeds from 100,000 on, classes in turn), then run once more through the frozen GPT, teacher-forced,
to record per position the conditional row's last hidden state ``h_c`` (what the speculative engine hands a
drafter) and the guided hidden state ``g = h_u + s (h_c - h_u)``, whose output-layer logits are the guided
logits the target samples from (the GPT's output layer has no bias, so guidance is linear in the hidden state).

Loss, EAGLE's (Li et al. 2024): smooth-L1 between the predicted and the true next hidden state ``h_c`` plus
``--p-weight`` times the cross-entropy of ``softmax(lm_head(predicted))`` against the target's distribution
(temperature 1). Departure, named: the token target is the GUIDED distribution, since that is what the target
samples and what the exact rule compares the drafts with, while the features stay the conditional row's.
EAGLE's uniform feature noise (U(-0.1, 0.1) on the input hidden states) is kept. The token loss weighs 1.0, not
EAGLE's 0.1: the default GPT's final-normed hidden states are large (the smooth-L1 term starts near 1.5), and the
guided token target is not what the conditional features alone would give, so the token term is what acceptance
reads.

    python -m mmaccel.image.training.distill_eagle --out /work/train/eagle --minutes 45 --threads 1

Writes ``eagle.safetensors`` and ``eagle_config.json`` to ``--out`` (atomically, at every evaluation, so a long
run can be looked at before it ends), and prints train losses, the validation losses and the teacher-forced
acceptance ``sum_x min(p, q)`` at temperature 0.8 of the first draft.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmaccel.drafting.eagle import EagleConfig, EagleHead, load_eagle, save_eagle
from mmaccel.image.defaults import DEFAULTS
from mmaccel.image.llamagen import LlamaGenGPT
from mmaccel.image.pipeline import DEFAULT_WEIGHTS, ImageARPipeline
from mmaccel.sampling import SamplingConfig

DATA_SEED = 100_000  # far from the bench's seeds (0 .. a few thousand)
NOISE = 0.1  # EAGLE's uniform feature noise half-width


def eagle_config_for(gpt: LlamaGenGPT) -> EagleConfig:
    """The EAGLE head's sizes for ``gpt``: its hidden size, vocabulary, heads and FFN width (one layer of it)."""
    c = gpt.config
    return EagleConfig(
        hidden_size=c.dim,
        vocab_size=c.vocab_size,
        num_attention_heads=c.n_head,
        num_key_value_heads=c.kv_heads,
        intermediate_size=c.ffn_hidden,
        rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_base,
    )


@torch.no_grad()
def generate_tokens(
    pipe: ImageARPipeline, seconds: float, batch: int, max_sequences: int, first_seed: int = DATA_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """AR samples of the default pipeline for ``seconds`` of wall time (at least one batch, at most
    ``max_sequences``), seeds from ``first_seed`` on: tokens ``[N, 256]``, labels ``[N]``."""
    sampling = SamplingConfig(DEFAULTS["temperature"], DEFAULTS["top_k"], DEFAULTS["top_p"])
    decoder = pipe.build_decoder("ar", sampling)
    classes = pipe.num_classes
    tokens, labels, start, n = [], [], time.perf_counter(), 0
    while n < max_sequences and (not tokens or time.perf_counter() - start < seconds):
        y = [(n + i) % classes for i in range(batch)]
        prompt = pipe.family.prompt(class_labels=y)
        out = decoder.generate(prompt, pipe.num_tokens, seeds=[first_seed + n + i for i in range(batch)])
        tokens.append(out.tokens.to(torch.int16))
        labels.append(torch.tensor(y))
        n += batch
    print(f"  data: {n} sequences in {time.perf_counter() - start:.0f} s", flush=True)
    return torch.cat(tokens), torch.cat(labels)


@torch.no_grad()
def teacher_features(gpt: LlamaGenGPT, tokens: torch.Tensor, labels: torch.Tensor, scale: float, batch: int = 32):
    """Per position ``s`` (the hidden state that produced token ``s``): ``h_c`` and guided ``g``, float16
    ``[N, T, D]`` each."""
    conds, guided = [], []
    null = gpt.config.num_classes
    for i in range(0, len(tokens), batch):
        x, y = tokens[i : i + batch].long(), labels[i : i + batch]
        both = torch.cat([y, torch.full_like(y, null)])
        emb = torch.cat([gpt.cls_embedding(both)[:, None], gpt.tok_embeddings(torch.cat([x, x])[:, :-1])], 1)
        positions = torch.arange(emb.shape[1]).expand(emb.shape[0], -1)
        h_c, h_u = gpt.run(emb, positions).chunk(2)
        conds.append(h_c.half())
        guided.append((h_u + scale * (h_c - h_u)).half())
    return torch.cat(conds), torch.cat(guided)


def eagle_losses(head: EagleHead, h_c: torch.Tensor, g: torch.Tensor, tokens: torch.Tensor, noise: float = 0.0):
    """(smooth-L1 on the next hidden state, soft cross-entropy against the guided distribution, logits of both)
    for teacher-forced pairs ``(h_c[s], tokens[s])`` predicting ``h_c[s + 1]``."""
    h_in = h_c[:, :-1].float()
    if noise:
        h_in = h_in + (torch.rand_like(h_in) * 2 - 1) * noise
    positions = torch.arange(h_in.shape[1]).expand(h_in.shape[0], -1)
    predicted = head(h_in, tokens[:, :-1].long(), positions)
    v_loss = F.smooth_l1_loss(predicted, h_c[:, 1:].float())
    student = head.logits(predicted)
    teacher = head.logits(g[:, 1:].float())
    p_loss = -(teacher.softmax(-1) * student.log_softmax(-1)).sum(-1).mean()
    return v_loss, p_loss, student, teacher


@torch.no_grad()
def evaluate(head: EagleHead, h_c, g, tokens, batch: int = 16) -> dict[str, float]:
    """Validation losses and the first draft's expected acceptance ``sum_x min(p, q)`` at temperature 0.8."""
    head.eval()
    sums, count = {"v_loss": 0.0, "p_loss": 0.0, "accept_t08": 0.0, "top1": 0.0}, 0
    t = DEFAULTS["temperature"]
    for i in range(0, len(tokens), batch):
        v, p, student, teacher = eagle_losses(head, h_c[i : i + batch], g[i : i + batch], tokens[i : i + batch])
        n = len(tokens[i : i + batch])
        sums["v_loss"] += float(v) * n
        sums["p_loss"] += float(p) * n
        q, target = (student / t).softmax(-1), (teacher / t).softmax(-1)
        sums["accept_t08"] += float(torch.minimum(q, target).sum(-1).mean()) * n
        sums["top1"] += float((student.argmax(-1) == teacher.argmax(-1)).float().mean()) * n
        count += n
    return {k: v / count for k, v in sums.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for eagle.safetensors and eagle_config.json")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="the target's checkpoint folder")
    parser.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget, data generation included")
    parser.add_argument("--data-fraction", type=float, default=0.25, help="share of the budget spent sampling data")
    parser.add_argument("--max-sequences", type=int, default=6000, help="at most this many training sequences")
    parser.add_argument("--val-sequences", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gen-batch", type=int, default=128, help="images sampled per AR batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine over the budget)")
    parser.add_argument("--p-weight", type=float, default=1.0, help="weight of the token loss (EAGLE's paper: 0.1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", help="an eagle.safetensors to continue from (its config must be this GPT's)")
    parser.add_argument(
        "--first-seed",
        type=int,
        help="seed of the first training sequence (default: right after the validation seeds); a continued run "
        "passes seeds no earlier run used, so that it sees new data",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or not 0 < args.data_fraction < 1:
        parser.error("--minutes must be > 0 and --data-fraction in (0, 1)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    budget = args.minutes * 60

    pipe = ImageARPipeline.from_pretrained(args.weights)
    gpt = pipe.model.gpt.eval().requires_grad_(False)
    scale = DEFAULTS["guidance_scale"]
    start_from = None
    if args.init:  # checked before minutes go into sampling data
        try:
            start_from = load_eagle(args.init)
        except (OSError, ValueError) as err:
            parser.error(f"--init {args.init}: {err}")
        if start_from.config != eagle_config_for(gpt):
            parser.error(f"--init {args.init}: its config {start_from.config} is not this GPT's")
    val_tokens, val_labels = generate_tokens(pipe, math.inf, args.val_sequences, args.val_sequences)
    seed = DATA_SEED + args.val_sequences if args.first_seed is None else args.first_seed
    if seed < DATA_SEED + args.val_sequences:
        parser.error(f"--first-seed must be >= {DATA_SEED + args.val_sequences}: lower seeds are validation data")
    tokens, labels = generate_tokens(pipe, budget * args.data_fraction, args.gen_batch, args.max_sequences, seed)
    val_h, val_g = teacher_features(gpt, val_tokens, val_labels, scale)
    train_h, train_g = teacher_features(gpt, tokens, labels, scale)
    print(f"  features ready at {(time.perf_counter() - start) / 60:.1f} min", flush=True)

    config = eagle_config_for(gpt)
    head = EagleHead(config).bind(gpt.tok_embeddings, gpt.output)
    if start_from is not None:
        head.load_state_dict(start_from.state_dict())
    n_params = sum(p.numel() for p in head.parameters())
    print(f"  EAGLE head: {n_params} parameters, config {config}", flush=True)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    train_start = time.perf_counter()
    seconds = budget - (train_start - start)
    eval_every = max(30.0, seconds / 10)
    last_eval, step, running = train_start, 0, None
    figures = evaluate(head, val_h, val_g, val_tokens)
    print("  before training: " + "  ".join(f"val_{k} {v:.4f}" for k, v in figures.items()), flush=True)
    while (elapsed := time.perf_counter() - train_start) < seconds:
        idx = torch.randint(len(tokens), (args.batch_size,), generator=gen)
        progress = elapsed / seconds
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr
        head.train()
        v, p, _, _ = eagle_losses(head, train_h[idx], train_g[idx], tokens[idx], noise=NOISE)
        loss = v + args.p_weight * p
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 0.5)
        opt.step()
        step += 1
        pair = (v.item(), p.item())
        running = pair if running is None else tuple(0.98 * r + 0.02 * x for r, x in zip(running, pair))
        now = time.perf_counter()
        if now - last_eval >= eval_every or now - train_start >= seconds:
            figures = evaluate(head, val_h, val_g, val_tokens)
            print(
                f"  {(now - start) / 60:5.1f} min  step {step}  train_v {running[0]:.4f}  train_p {running[1]:.4f}  "
                + "  ".join(f"val_{k} {v:.4f}" for k, v in figures.items()),
                flush=True,
            )
            save_eagle(head, out)
            last_eval = time.perf_counter()
    save_eagle(head, out)
    total = (time.perf_counter() - start) / 60
    print(f"done: {step} steps, {len(tokens)} training sequences, {total:.1f} min; wrote {out / 'eagle.safetensors'}")


if __name__ == "__main__":
    main()
