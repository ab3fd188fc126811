"""Train the speech default model's codec LM: ``MusicgenForCausalLM`` with its delay pattern, conditioned on a
prefix of (voice, phonemes, start) embedded by a table trained jointly; on a CPU.

    python -m mmaccel.audio.training.train_lm --out audio/weights --minutes 20

Data: the espeak-ng training set of :mod:`mmaccel.audio.training.dataset`, coded by the trained codec
(``weights/codec.safetensors``). Loss: MusicGen's per-codebook cross-entropy over the delayed steps, the stop
symbol (``vocab_size - 1``) included. Prints train/val loss and the mean per-token entropy of the model's
distribution on validation steps (the AR entropy of the model card).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mmaccel.audio.codec import MelCodec
from mmaccel.audio.data import VOICES
from mmaccel.audio.musicgen import delay_steps, tiny_musicgen
from mmaccel.audio.speech_lm import SpeechLM, symbols_for
from mmaccel.audio.training.dataset import TRAIN_SEED, VAL_SEED, lexicon_cached, speech_set
from mmaccel.io import write_atomic


def batch_tensors(lm: SpeechLM, items: list[tuple[torch.Tensor, torch.Tensor]]):
    """(prefix ids, step tokens) pairs -> inputs embeds ``[B, L, D]`` and targets ``[B, K, L]`` (-100: ignored)."""
    k, pad = lm.streams.num_streams, lm.streams.pad_id
    width = max(len(p) + len(s) - 1 for p, s in items)
    embeds, targets = [], []
    for prefix, steps in items:
        inputs = steps[:-1].clamp(min=0).masked_fill(steps[:-1] < 0, pad)
        step_index = torch.arange(len(inputs))[None]
        e = torch.cat([lm.prefix(prefix), lm.streams.embed_steps(inputs[None], step_index)[0]])
        embeds.append(F.pad(e, (0, 0, 0, width - len(e))))
        target = torch.full((width, k), -100, dtype=torch.long)
        target[len(prefix) - 1 : len(prefix) - 1 + len(steps)] = steps
        targets.append(target.T)
    return torch.stack(embeds), torch.stack(targets)


def loss_and_entropy(lm: SpeechLM, items) -> tuple[torch.Tensor, float]:
    embeds, targets = batch_tensors(lm, items)
    logits = lm.musicgen(inputs_embeds=embeds, use_cache=False).logits
    logits = logits.view(len(items), lm.streams.num_streams, embeds.shape[1], -1)
    valid = targets >= 0
    loss = F.cross_entropy(logits[valid], targets[valid])
    probs = logits[valid].detach().softmax(-1)
    entropy = float(-(probs * probs.clamp(min=1e-12).log()).sum(-1).mean())
    return loss, entropy


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def save_lm(lm: SpeechLM, out: Path, lexicon: dict, record: dict) -> None:
    """The LM's weights, config, lexicon and run record under ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in lm.state_dict().items()}
    write_atomic(out / "lm.safetensors", lambda tmp: save_file(state, tmp))
    write_text_atomic(out / "lm_config.json", json.dumps(lm.config_dict(), ensure_ascii=False, indent=1))
    write_text_atomic(out / "lexicon.json", json.dumps(lexicon, ensure_ascii=False, indent=1))
    write_text_atomic(out / "lm_train.json", json.dumps(record, indent=1))


def learning_rate(base: float, schedule: str, elapsed: float, total: float) -> float:
    """``constant``: ``base``; ``cosine``: from ``base`` down to a tenth of it over the run's wall-clock."""
    if schedule == "constant":
        return base
    frac = min(max(elapsed / total, 0.0), 1.0)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("audio/weights"))
    parser.add_argument("--cache", type=Path, default=Path("runs/speech_data"))
    parser.add_argument("--utterances", type=int, default=4000)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", type=Path, default=None, help="continue from this folder's lm.safetensors")
    parser.add_argument("--codec", type=Path, default=None, help="the codec's folder (default: --init, else --out)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--schedule", choices=("constant", "cosine"), default="constant", help="cosine: lr to lr/10 over --minutes"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests)")
    args = parser.parse_args(argv)
    if args.lr <= 0:
        raise SystemExit(f"--lr must be > 0, got {args.lr}")
    torch.set_num_threads(args.threads)
    start = time.time()
    codec_dir = args.codec or args.init or args.out
    if not (codec_dir / "codec.safetensors").is_file():
        raise SystemExit(f"--codec {codec_dir}: no codec.safetensors there")
    codec = MelCodec.from_pretrained(codec_dir)
    lexicon = lexicon_cached(args.cache)
    symbols = symbols_for(lexicon)
    train = speech_set(args.utterances, TRAIN_SEED, args.cache)
    val = speech_set(200, VAL_SEED, args.cache)
    k, size = codec.config.codebooks, codec.config.codebook_size
    if args.init is not None:  # a continuation: the architecture and symbols come from the checkpoint
        lm = SpeechLM.from_pretrained(args.init)
        if lm.symbols != symbols or lm.streams.num_streams != k:
            raise SystemExit(f"--init {args.init}: its symbols or codebooks differ from this data's")
        before = (
            json.loads((args.init / "lm_train.json").read_text()) if (args.init / "lm_train.json").is_file() else {}
        )
    else:
        musicgen = tiny_musicgen(codebooks=k, vocab=size + 1, hidden=args.hidden, layers=args.layers, seed=0)
        lm = SpeechLM(musicgen, symbols, list(VOICES), max_steps=256)
        before = {}
    stop = size

    def items(data, n=None):
        out = []
        for i in range(len(data.mels) if n is None else n):
            codes = codec.encode(data.mels[i][None])[0]
            out.append((lm.encode_prefix(data.phonemes[i], data.voices[i]), delay_steps(codes, stop)))
        return out

    train_items, val_items = items(train), items(val, 64)
    print(f"data ready in {time.time() - start:.0f}s; {sum(p.numel() for p in lm.parameters())} parameters", flush=True)
    if args.init is not None:
        lm.eval()
        with torch.no_grad():
            val_before, entropy_before = loss_and_entropy(lm, val_items)
        print(f"init: val loss {val_before.item():.3f}, entropy {entropy_before:.3f} nats", flush=True)
    opt = torch.optim.AdamW(lm.parameters(), lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    train_start = time.time()
    deadline = start + args.minutes * 60
    step = 0
    lm.train()
    while time.time() < deadline and (args.max_steps is None or step < args.max_steps):
        lr = learning_rate(args.lr, args.schedule, time.time() - train_start, max(deadline - train_start, 1e-9))
        for group in opt.param_groups:
            group["lr"] = lr
        picks = torch.randint(len(train_items), (args.batch,), generator=g).tolist()
        loss, _ = loss_and_entropy(lm, [train_items[i] for i in picks])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} ({time.time() - start:.0f}s)", flush=True)
    lm.eval()
    with torch.no_grad():
        val_loss, entropy = loss_and_entropy(lm, val_items)
    print(f"done: {step} steps, val loss {val_loss.item():.3f}, entropy {entropy:.3f} nats", flush=True)
    minutes = round((time.time() - start) / 60, 2)
    run = {"steps": step, "minutes": minutes, "lr": args.lr, "schedule": args.schedule}
    run.update(val_loss=val_loss.item(), val_entropy_nats=entropy, init=str(args.init) if args.init else None)
    record = {
        "steps": step + before.get("steps", 0),
        "val_loss": val_loss.item(),
        "val_entropy_nats": entropy,
        "minutes": minutes + before.get("minutes", 0),
        "runs": [*before.get("runs", [before] if before else []), run],
    }
    save_lm(lm, args.out, lexicon, record)


if __name__ == "__main__":
    main()
