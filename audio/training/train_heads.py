"""Distil MCTP heads (:class:`mmaccel.stream_heads.FrameHeads`) from the speech default model's codec LM.

    OMP_NUM_THREADS=1 python -m mmaccel.audio.training.train_heads --model audio/weights --minutes 20

Data: the frozen LM's own samples (AR at ``--temperature``, the bench's 1 by default) on fresh sentences of the
training grammar, one new batch per step, so the heads learn the distribution they draft under at generation.
Loss: :func:`~mmaccel.stream_heads.frame_heads_loss` (head ``j`` at the state predicting step ``t`` matches the
LM's distributions of step ``t + 1 + j``, KL summed over codebooks). The heads start as copies of the LM's own
output layer (a head then guesses step ``t + 1 + j`` as the LM guesses step ``t``).

Before and after training it prints the held-out acceptance (:func:`~mmaccel.stream_heads.frame_heads_acceptance`,
teacher forced on the LM's samples of ``--eval-utterances`` sentences of another seed): each head's mean frame
acceptance under the exact/SJD rule and the steps one forward would commit if the heads' acceptances were
independent (``1 + sum_j prod_{i<=j} a_i``). It writes ``heads.safetensors``, ``heads_config.json`` and
``heads_train.json`` (the run: command, minutes, steps, losses, acceptance before/after) atomically into ``--out``;
``--eval-only`` prints the acceptance of ``--init``'s heads and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from mmaccel.audio.data import phonemize, sentence
from mmaccel.audio.speech_lm import SpeechLM
from mmaccel.drafting.heads import deepened_state
from mmaccel.sampling import SamplingConfig
from mmaccel.stream_heads import (
    FrameHeads,
    frame_heads_acceptance,
    frame_heads_loss,
    load_frame_heads,
    save_frame_heads,
)
from mmaccel.streams import StreamDecoder

#: Sentence seeds: the heads' training sentences and their held-out ones (neither is a speech-set seed).
HEADS_SEED, HEADS_VAL_SEED = 11, 12


def prompts(lm: SpeechLM, lexicon: dict[str, str], seed: int, start: int, n: int):
    """The prompt of sentences ``start .. start + n`` of ``seed`` (sentence ``i`` and its voice drawn from
    ``seed`` and ``i`` alone)."""
    prefixes = []
    for i in range(start, start + n):
        rng = random.Random(seed * 1_000_003 + i)
        text = sentence(rng)
        prefixes.append(lm.encode_prefix(phonemize(text, lexicon), rng.choice(lm.voices)))
    return lm.prompt(prefixes)


def sampled_steps(lm: SpeechLM, prompt, steps: int, temperature: float, seeds: list[int], need: int):
    """The LM's AR samples ``[B', T, K]`` of ``prompt`` and the prompt of their rows: rows that stopped before
    ``need`` steps are dropped, the rest cut to the shortest of them (``None`` when none is left)."""
    out = StreamDecoder(lm.streams, None, "exact", SamplingConfig(temperature=temperature)).generate(
        prompt, steps, seeds=seeds
    )
    keep = (out.stats.lengths >= need).nonzero()[:, 0]
    if len(keep) == 0:
        return None, None
    t = int(out.stats.lengths[keep].min())
    kept = type(prompt)(prompt.ids[keep], prompt.lengths[keep])
    return out.tokens[keep, :t], kept


def acceptance_figures(lm: SpeechLM, heads: FrameHeads, held_out, temperature: float) -> dict:
    frames, books = [], []
    for tokens, prompt in held_out:
        f, b = frame_heads_acceptance(lm.streams, heads, tokens, prompt, temperature)
        frames.append(f)
        books.append(b)
    frame, book = torch.cat(frames), torch.cat(books)
    chain = frame.cumprod(-1).sum(-1)  # per position: the heads' steps accepted in a row, expected
    return {
        "per_head": frame.mean(0).tolist(),
        "per_head_per_codebook": book.mean(0).tolist(),
        "steps_per_forward": 1 + float(chain.mean()),
        "positions": int(frame.shape[0]),
    }


def format_acceptance(figures: dict) -> str:
    heads = " ".join(f"{a:.3f}" for a in figures["per_head"])
    return (
        f"held-out frame acceptance per head {heads}  steps per forward {figures['steps_per_forward']:.3f} "
        f"({figures['positions']} positions)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("audio/weights"), help="the LM's folder")
    parser.add_argument("--out", type=Path, default=None, help="where the heads go (default: --model)")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=120, help="steps the LM samples per sentence (the bench's 120)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-utterances", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests)")
    parser.add_argument("--init", type=Path, default=None, help="start from the heads saved in this folder")
    parser.add_argument("--eval-only", action="store_true", help="print the held-out acceptance of --init's heads")
    parser.add_argument(
        "--hinted", action="store_true", help="heads that also read the step just committed (frame-repeat hint)"
    )
    args = parser.parse_args(argv)
    for name in ("minutes", "lr", "temperature"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("heads", "layers", "batch", "eval_utterances"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.steps < args.heads + 2 + 4:
        raise SystemExit(f"--steps must be >= --heads + 6 = {args.heads + 6}, got {args.steps}")
    out = args.out or args.model
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    lm = SpeechLM.from_pretrained(args.model)
    lexicon = json.loads((args.model / "lexicon.json").read_text())
    for p in lm.parameters():
        p.requires_grad_(False)
    streams = lm.streams
    if args.init is not None:
        heads = load_frame_heads(args.init)
        if heads is None:
            raise SystemExit(f"--init {args.init}: no heads.safetensors there")
        print(f"heads start from {args.init}", flush=True)
        layers = len(heads.heads.heads[0]) - 1
        if args.layers != layers:  # wider heads start as the trained ones: the new blocks add nothing yet
            try:
                state = deepened_state(heads.heads.state_dict(), args.layers)
            except ValueError as err:
                raise SystemExit(f"--init {args.init} with --layers {args.layers}: {err}") from None
            wider = FrameHeads(
                heads.heads.hidden_size, heads.num_streams, heads.vocab_size, heads.num_heads, args.layers, heads.hinted
            )
            wider.heads.load_state_dict(state)
            heads = wider
            print(f"  ({layers} layer(s); the {args.layers - layers} new ones start as the identity)", flush=True)
        if args.hinted and not heads.hinted:  # plain heads: their weights, and a hint embedding from the copy prior
            hinted = FrameHeads(
                heads.heads.hidden_size, heads.num_streams, heads.vocab_size, heads.num_heads,
                len(heads.heads.heads[0]) - 1, hinted=True,
            )
            hinted.load_state_dict(heads.state_dict(), strict=False)
            hinted.heads.init_hint_from_output(torch.cat([head.weight for head in streams.model.lm_heads]))
            heads = hinted
            print("  (plain heads; hint embedding: copy prior)", flush=True)
    elif args.eval_only:
        raise SystemExit("--eval-only needs --init (the heads to evaluate)")
    else:
        hidden = streams.model.config.hidden_size
        heads = FrameHeads(hidden, streams.num_streams, streams.vocab_size, args.heads, args.layers, args.hinted)
        output = torch.cat([head.weight for head in streams.model.lm_heads])
        heads.heads.init_from_output(output)
        if args.hinted:
            heads.heads.init_hint_from_output(output)
    need = heads.num_heads + 2 + streams.num_streams
    held_out = []
    for i in range(0, args.eval_utterances, args.batch):
        n = min(args.batch, args.eval_utterances - i)
        prompt = prompts(lm, lexicon, HEADS_VAL_SEED, i, n)
        pair = sampled_steps(lm, prompt, args.steps, args.temperature, [10_000 + i + r for r in range(n)], need)
        if pair[0] is not None:
            held_out.append(pair)
    if not held_out:
        raise SystemExit(f"every held-out sample stopped before {need} steps: nothing to judge the heads on")
    before = acceptance_figures(lm, heads, held_out, args.temperature)
    print(f"before: {format_acceptance(before)}", flush=True)
    if args.eval_only:
        return
    opt = torch.optim.AdamW(heads.parameters(), lr=args.lr, weight_decay=0.0)
    deadline = start + args.minutes * 60
    losses, step, drawn = [], 0, 0
    heads.train()
    while time.perf_counter() < deadline and (args.max_steps is None or step < args.max_steps):
        prompt = prompts(lm, lexicon, HEADS_SEED, drawn, args.batch)
        tokens, kept = sampled_steps(
            lm, prompt, args.steps, args.temperature, list(range(drawn, drawn + args.batch)), need
        )
        drawn += args.batch
        if tokens is None:
            continue
        loss = frame_heads_loss(streams, heads, tokens, kept, args.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 20 == 0:
            recent = losses[-20:]
            print(f"step {step} loss {sum(recent) / len(recent):.4f} ({time.perf_counter() - start:.0f}s)", flush=True)
    heads.eval()
    after = acceptance_figures(lm, heads, held_out, args.temperature)
    print(f"after: {format_acceptance(after)}", flush=True)
    last = losses[-20:]
    record = {
        "command": "python -m mmaccel.audio.training.train_heads " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": str(args.model),
        "minutes": round((time.perf_counter() - start) / 60, 2),
        "steps": step,
        "sentences": drawn,
        "temperature": args.temperature,
        "first_loss": losses[0] if losses else None,
        "last_20_mean_loss": sum(last) / len(last) if last else None,
        "acceptance_before": before,
        "acceptance_after": after,
    }
    save_frame_heads(heads, out, record)
    print(f"saved {out / 'heads.safetensors'}; {step} steps, {record['minutes']} min", flush=True)


if __name__ == "__main__":
    main()
