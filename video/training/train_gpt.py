"""Train the video default model on a CPU: the VQ copy and the class-conditional Llama GPT.

Clips come from :mod:`mmaccel.video.data` (seed base ``SEEDS["gpt"]``), frames are tokenised by the image
default model's VQ tokenizer, which this script reads once from ``--vq`` (default ``image/weights``) and copies
into ``--out`` so the video modality never reads the image folder at run time. The GPT is trained with
next-token cross-entropy on ``[class, frame 0 tokens, ..., frame T-1 tokens]``; labels drop to the null class
with probability 0.1 (LlamaGen) so classifier-free guidance works. It stops after ``--minutes``.

    nice -n 5 python -m mmaccel.video.training.train_gpt --out video/weights --clips 800 --minutes 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from mmaccel.models.slot_llama import with_slots
from mmaccel.models.vq import VQModel
from mmaccel.video.data import KINDS, MOTIONS, NUM_CLASSES, SEEDS, make_clips
from mmaccel.video.model import load_video_gpt, prompt_head, save_video_gpt, sink_token_id, video_config

CLASS_DROPOUT = 0.1


@torch.no_grad()
def encode_clips(vq: VQModel, clips: np.ndarray, batch: int = 256) -> torch.Tensor:
    """uint8 clips [N, T, H, W, 3] -> tokens int64 [N, T * h * w] (frame after frame, raster order)."""
    n, t = clips.shape[:2]
    frames = clips.reshape(n * t, *clips.shape[2:])
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i : i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(vq.encode(x).flatten(1))
    return torch.cat(out).reshape(n, -1)


def other_shape(condition: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """For class token ids ``condition`` (``k + label``), the id of a class of another shape and the same motion
    (``label = shape * len(MOTIONS) + motion``, :mod:`mmaccel.video.data`): what the first frame alone must tell apart."""
    shift = len(MOTIONS) * torch.randint(1, len(KINDS), condition.shape, generator=gen)
    return k + (condition - k + shift) % NUM_CLASSES


def code_nll(
    model: LlamaForCausalLM, condition: torch.Tensor, codes: torch.Tensor, k: int, sink: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code NLL ``[n, len]`` of ``codes`` after the prompt of class token ids ``condition`` (after the ``sink``
    where the model has one), and the code positions' logits over the codebook ``[n, len, k]``."""
    head = prompt_head(condition, sink)
    ids = torch.cat([head, codes], 1)
    logits = model(input_ids=ids[:, :-1]).logits[:, head.shape[1] - 1 :, :k].float()
    return F.cross_entropy(logits.transpose(1, 2), codes, reduction="none"), logits


def first_frame_contrast(
    model: LlamaForCausalLM, condition: torch.Tensor, first_frame: torch.Tensor, true_nll: torch.Tensor, k: int,
    sink: int | None, margin: float, gen: torch.Generator,
) -> torch.Tensor:
    """A hinge on how much less likely the first frame is under a class of another shape than under its own:
    ``mean(relu(margin - (nll_wrong - nll_true)))``, both per token over the first frame, over the rows that carry
    a class (not the null class). This is our addition: the plain loss gives the class's share of the first frame
    a few hundredths of a nat per token, and the trained GPT drew the wrong shape (``eval_gpt``'s wrong-shape
    gain); the contrast asks the class to decide the shape, which classifier-free guidance then amplifies.
    ``condition`` is each row's class token id, ``first_frame`` its first frame's codes ``[B, frame]`` and
    ``true_nll`` their terms in the plain loss."""
    real = condition < k + NUM_CLASSES
    if not bool(real.any()):
        return true_nll.new_zeros(())
    wrong_nll, _ = code_nll(model, other_shape(condition[real], k, gen), first_frame[real], k, sink)
    gap = wrong_nll.mean(1) - true_nll[real].mean(1)
    return F.relu(margin - gap).mean()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("video/weights"))
    p.add_argument("--vq", type=Path, default=Path("image/weights"), help="folder holding vq.safetensors to copy")
    p.add_argument("--size", default="video-mini")
    p.add_argument("--clips", type=int, default=3000)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget, data encoding included")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--init", type=Path, help="continue from the GPT in this folder (its size and vocabulary)")
    p.add_argument("--data-seed", type=int, default=SEEDS["gpt"],
                   help="seed base of the training clips (default: SEEDS['gpt']; never the validation base +1)")
    p.add_argument("--cond-frames", type=int, default=0,
                   help="the first N frames' tokens weigh --cond-weight in the loss (where the class is decided)")
    p.add_argument("--cond-weight", type=float, default=1.0)
    p.add_argument("--sink", action="store_true",
                   help="put a token of its own before the class token, to take the first position's attention-sink "
                        "role (the class token otherwise holds it)")
    p.add_argument("--contrast-weight", type=float, default=0.0,
                   help="weight of the first frame's class contrast (0: off): a hinge that asks the first frame to be "
                        "--contrast-margin nats/token less likely under a class of another shape than under its own")
    p.add_argument("--contrast-margin", type=float, default=0.05)
    p.add_argument("--cell-slots", action="store_true",
                   help="add a learned embedding of each token's cell in its frame (the core's SlotLlama); with "
                        "--init, to a plain GPT's weights, starting at zero")
    a = p.parse_args(argv)
    if a.contrast_weight < 0 or a.contrast_margin <= 0:
        p.error("--contrast-weight must be >= 0 and --contrast-margin > 0")
    if a.data_seed == SEEDS["gpt"] + 1:
        p.error(f"--data-seed {a.data_seed} is the validation seed base")
    if a.cond_weight <= 0 or not 0 <= a.cond_frames <= a.frames:
        p.error("--cond-weight must be > 0 and --cond-frames in [0, --frames]")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    start = time.monotonic()
    deadline = start + 60 * a.minutes

    vq = VQModel.from_pretrained(a.vq / "vq.safetensors").eval()
    a.out.mkdir(parents=True, exist_ok=True)
    vq.save_pretrained(a.out, "vq")
    clips, labels = make_clips(a.clips, a.data_seed, a.frames, a.resolution)
    val_clips, val_labels = make_clips(64, SEEDS["gpt"] + 1, a.frames, a.resolution)
    tokens, val_tokens = encode_clips(vq, clips), encode_clips(vq, val_clips)
    grid = a.resolution // vq.config.downsample
    k = vq.config.codebook_size
    print(f"encoded {len(tokens)} clips -> {tokens.shape[1]} tokens each in {time.monotonic() - start:.0f}s", flush=True)

    sink = sink_token_id(k, NUM_CLASSES) if a.sink else None
    if a.init is not None:
        loaded = load_video_gpt(a.init)
        sink = loaded.sink if loaded.sink is not None else sink  # a model trained with a sink keeps it
        model = loaded.model.train().requires_grad_(True)
        # Models trained before the fix had class 0's id as the pad id: its embedding row sat at zero, frozen.
        model.model.embed_tokens.padding_idx = None
        model.config.pad_token_id = None
        steps_before = json.loads((a.init / "gpt_config.json").read_text()).get("steps", 0)
    else:
        model, steps_before = LlamaForCausalLM(video_config(a.size, k, NUM_CLASSES, tokens.shape[1])), 0
    if sink is not None and model.config.vocab_size <= sink:
        model.resize_token_embeddings(sink + 1, mean_resizing=False)
        model.config.max_position_embeddings = tokens.shape[1] + 2
    prefix = 2 if sink is not None else 1  # input tokens before the first code: (sink,) class
    if a.cell_slots:
        model = with_slots(model, grid * grid, prefix)
    # Only the first frames say which class a clip is (shape, then motion); later frames follow from them. The
    # class's share of the plain loss is a few hundredths of a nat per token, so the weight makes it worth learning.
    weight = torch.ones(tokens.shape[1])
    weight[: a.cond_frames * grid * grid] = a.cond_weight
    weight = weight / weight.mean()
    print(f"params {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.05, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    meta = {"codebook_size": k, "num_classes": NUM_CLASSES, "frames": a.frames, "grid": grid,
            "resolution": a.resolution, "train_clips": a.clips, "seed_base": a.data_seed,
            "continued_from_steps": steps_before, "cond_frames": a.cond_frames, "cond_weight": a.cond_weight,
            "sink_token": sink, "contrast_weight": a.contrast_weight, "contrast_margin": a.contrast_margin}

    def batch_ids(tok: torch.Tensor, lab: torch.Tensor, drop: bool) -> torch.Tensor:
        cls = lab + k
        if drop:
            cls = torch.where(torch.rand(len(lab), generator=gen) < CLASS_DROPOUT, torch.full_like(cls, k + NUM_CLASSES), cls)
        return torch.cat([prompt_head(cls, sink), tok], 1)

    labels_t = torch.from_numpy(labels)
    frame = grid * grid
    step, t_total = 0, 60 * a.minutes
    while time.monotonic() < deadline:
        model.train()
        idx = torch.randint(len(tokens), (a.batch,), generator=gen)
        ids = batch_ids(tokens[idx], labels_t[idx], True)
        # Cosine decay over the wall-clock budget (the number of steps is unknown in advance).
        frac = min(1.0, (time.monotonic() - start) / t_total)
        for g in opt.param_groups:
            g["lr"] = a.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac))) * min(1.0, (step + 1) / 100)
        logits = model(input_ids=ids[:, :-1]).logits[:, prefix - 1 :]
        nll = F.cross_entropy(logits[..., :k].reshape(-1, k), ids[:, prefix:].reshape(-1), reduction="none")
        nll = nll.reshape(len(ids), -1)
        loss = (nll * weight).mean()
        if a.contrast_weight > 0:
            loss = loss + a.contrast_weight * first_frame_contrast(
                model, ids[:, prefix - 1], ids[:, prefix : prefix + frame], nll[:, :frame], k, sink, a.contrast_margin, gen
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            model.eval()
            with torch.no_grad():
                vids = batch_ids(val_tokens[:32], torch.from_numpy(val_labels[:32]), False)
                vl = model(input_ids=vids[:, :-1]).logits[:, prefix - 1 :, :k]
                val_nll = F.cross_entropy(vl.reshape(-1, k), vids[:, prefix:].reshape(-1), reduction="none")
                val = val_nll.mean().item()
                # eval_gpt's wrong-shape gain on the first frame: +len(MOTIONS) changes the shape alone (video/data.py).
                wrong = k + (vids[:, prefix - 1] - k + len(MOTIONS)) % NUM_CLASSES
                wrong_nll, _ = code_nll(model, wrong, vids[:, prefix : prefix + frame], k, sink)
                shape_gain = wrong_nll.mean().item() - val_nll.reshape(len(vids), -1)[:, :frame].mean().item()
            print(f"step {step} loss {loss.item():.3f} val {val:.3f} shape gain {shape_gain:+.4f} "
                  f"t {time.monotonic() - start:.0f}s", flush=True)
        if step % 200 == 0:
            save_video_gpt(model, {**meta, "steps": steps_before + step}, a.out)
    save_video_gpt(model, {**meta, "steps": steps_before + step}, a.out)
    print(f"done: {step} steps in {time.monotonic() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
