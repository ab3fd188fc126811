"""Train the video pruning testbed: a small ``LlavaOnevisionForConditionalGeneration`` (SigLIP vision tower,
Qwen2 language model) on the clip questions of :mod:`mmaccel.prune.testbed.video_questions`.

    python -m mmaccel.prune.testbed.train_video --out mmaccel/prune/weights_video --minutes 55

Runs on one CPU thread. Clips are generated on the fly (never from the held-out seed); each training
sequence asks all three questions about its clip, in random order (:func:`training_example`), with the
loss on the answer words and end tokens only (evaluation asks one).
Batches, the tokenizer and the evaluation are the image testbed's (:mod:`mmaccel.prune.testbed.train`).
Writes the safetensors weights, the processor files, training.json and a model card with the held-out
accuracy it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from mmaccel.io import write_atomic, write_json_atomic

from .auxiliary import VideoAuxiliary
from .questions import SHAPE_COLOURS
from .train import accuracy_by_kind, bench_section, train_for
from .video_questions import (
    FRAMES,
    IMAGE_SIZE,
    PATCH_SIZE,
    build_processor,
    heldout_questions,
    make_clip,
    questions_about,
)


def build_model(processor):
    """The untrained testbed: SigLIP tower (2 layers, width 64), 2-layer projector, Qwen2 (4 layers, width 128)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tokenizer = processor.tokenizer
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_1",
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    return LlavaOnevisionForConditionalGeneration(config)


def training_example(rng: np.random.Generator) -> dict:
    """A fresh clip, one of its three questions, and the others as followups (more answers per encoded clip).

    ``which way does the red shape move ?`` names the mover's colour, so it never comes before ``what colour is
    the moving shape ?`` in one sequence.
    """
    clip = make_clip(rng)
    direction, new, moving = questions_about(clip)
    first = [direction, new, moving][int(rng.integers(3))]
    if first is direction:
        followups = [new]
    elif first is new:
        followups = [moving, direction]
    else:
        followups = [new, direction] if rng.random() < 0.5 else [direction, new]
    return {"video": clip.render(), "question": first[0], "answer": first[1], "followups": followups, "clip": clip}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "weights_video")
    parser.add_argument("--minutes", type=float, default=55.0, help="wall-clock training budget")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--init", type=Path, default=None, help="continue from this testbed folder's weights")
    parser.add_argument("--card", action="store_true", help="only rewrite README.md from training.json (+ bench.json)")
    parser.add_argument(
        "--auxiliary",
        action="store_true",
        help="also train dense heads: colour and centre under each vision patch, motion at each video token",
    )
    args = parser.parse_args(argv)
    if args.card:
        write_card(args.out, json.loads((args.out / "training.json").read_text()))
        return

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    processor = build_processor()
    if args.init is not None:
        from transformers import LlavaOnevisionForConditionalGeneration

        model = LlavaOnevisionForConditionalGeneration.from_pretrained(args.init, attn_implementation="sdpa").train()
    else:
        model = build_model(processor).train()
    previous = json.loads((args.init / "training.json").read_text()) if args.init is not None else None
    heldout = heldout_questions(300)
    auxiliary = None
    if args.auxiliary:
        auxiliary = VideoAuxiliary(model, SHAPE_COLOURS, IMAGE_SIZE, PATCH_SIZE, processor.video_token_id)
    start = time.perf_counter()
    step, history = train_for(
        model,
        processor,
        lambda: training_example(rng),
        heldout,
        args.minutes,
        args.batch,
        args.lr,
        args.eval_every,
        log_every=10,
        auxiliary=auxiliary,
    )
    if auxiliary is not None:
        auxiliary.remove()
    minutes = (time.perf_counter() - start) / 60
    model.eval()
    by_kind, accuracy = accuracy_by_kind(model, processor, heldout)
    print(f"final held-out accuracy (300): {accuracy:.3f} after {step} steps, {minutes:.1f} min", flush=True)
    print(f"by question: {json.dumps(by_kind)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    processor.save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    summary = {
        "steps": step,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "auxiliary": args.auxiliary,
        "minutes": minutes,
        "parameters": params,
        "heldout_accuracy": accuracy,
        "heldout_accuracy_by_question": by_kind,
        "history": history,
        "continued_from": previous,
    }
    write_json_atomic(args.out / "training.json", summary)
    (args.out / "bench.json").unlink(missing_ok=True)  # it measured the weights just replaced
    write_card(args.out, summary)


def _continued(previous: dict | None) -> str:
    if previous is None:
        return ""
    return (
        f"`python -m mmaccel.prune.testbed.train_video --minutes {previous['minutes']:.0f} --batch {previous['batch']} "
        f"--lr {previous['lr']} --seed {previous['seed']}` ({previous['steps']} steps, "
        f"{previous['minutes']:.1f} minutes, held-out {previous['heldout_accuracy']:.1%}), "
        "then with `--init <that folder>` "
    )


BENCH_COMMAND = (
    "mmaccel bench prune --model default-video "
    "--methods none,fastv,visionzip,divprune,divprune:proportional=true,dart,tome,tome:proportional=true,holitom "
    "--keep 0.5,0.25,0.1 --batch-size 8 --json mmaccel/prune/weights_video/bench.json"
)


def write_card(out: Path, summary: dict) -> None:
    """The model card README.md of a trained video testbed folder (``summary`` is its training.json); with the
    bench table when the folder holds a ``bench.json`` from :data:`BENCH_COMMAND`."""
    by_kind = ", ".join(f"{k} {v:.1%}" for k, v in summary.get("heldout_accuracy_by_question", {}).items())
    side = IMAGE_SIZE // PATCH_SIZE
    pooled = math.ceil(side / 2) ** 2
    params, minutes, batch = summary["parameters"] / 1e6, summary["minutes"], summary["batch"]
    continued = _continued(summary.get("continued_from"))
    auxiliary_flag, auxiliary = "", ""
    if summary.get("auxiliary"):
        auxiliary_flag = " --auxiliary"
        auxiliary = (
            "\n  With `--auxiliary`, linear heads also learn the colour and centre of the shape under each patch,"
            "\n  and, on language-model layer 2, whether the shape at each video token is still, new, or moving left,"
            "\n  right, up or down (`mmaccel/prune/testbed/auxiliary.py`); they exist only during training and are not"
            "\n  part of the shipped model."
        )
    card = f"""# mmaccel video pruning testbed (LLaVA-OneVision architecture, {params:.2f} M parameters)

A small `LlavaOnevisionForConditionalGeneration` that visual-token pruning of **video** input (`mmaccel.prune`,
`mmaccel bench prune --model default-video`) is measured on, HoliTom's temporal and static-token merging
included. Trained from scratch in this repository; no external data or weights.

- **Architecture**: SigLIP vision tower ({IMAGE_SIZE}x{IMAGE_SIZE} frames in {PATCH_SIZE}x{PATCH_SIZE}-pixel
  patches, {side}x{side} a frame, 2 layers, width 64), 2-layer GELU projector, OneVision's 2x2 bilinear pooling
  ({pooled} tokens a frame; a {FRAMES}-frame clip is {FRAMES * pooled + 1} video tokens with the closing newline
  token), Qwen2 language model (4 layers, width 128, 4 heads, MLP 384), word-level vocabulary of
  {len(build_processor().tokenizer)} tokens. fp32, SDPA attention.
- **Processor**: `ArrayOnevisionProcessor` / `ArrayVideoProcessor` (`mmaccel/prune/testbed/video_processor.py`):
  OneVision's processor and video preprocessing without torchvision; `import mmaccel.prune.bench` (or that
  module) registers them so `AutoProcessor.from_pretrained` loads this folder. A video is given as
  `processor(text=..., videos=[uint8 array [frames, H, W, 3]])` -> `pixel_values_videos`.
- **Data** (`mmaccel.prune.testbed.video_questions`): {FRAMES}-frame clips drawn with `mmaccel.data.scenes`: a static
  dark background (flat or gradient), zero to two static distractor shapes, one shape sliding left, right, up
  or down by 40-55% of the frame, and one shape that appears at frame 2-{FRAMES - 2} and stays; kinds circle,
  square, triangle, star, six colours, all distinct within a clip, no overlaps. Questions:
  `which way does the red shape move ?` (left/right/up/down), `what colour is the new shape ?` (the one that
  appears), `what colour is the moving shape ?`. One-word answers. Shapes are named by colour: with kind-named
  questions (`which shape appears ?` -> a kind) two training runs sat at chance, since a shape is about one
  16x16-pixel token a frame here.
- **Training**: {continued}`python -m mmaccel.prune.testbed.train_video --minutes {minutes:.0f}
  --batch {batch} --lr {summary["lr"]} --seed {summary["seed"]}{auxiliary_flag}` on one CPU thread of a shared machine:
  {summary["steps"]} steps of batch {summary["batch"]}, each sequence a fresh clip with its three questions
  in random order, AdamW, wall-clock cosine schedule, loss on the answer words and end tokens,
  {summary["minutes"]:.1f} minutes.{auxiliary}
- **Held-out accuracy (unpruned)**: {summary["heldout_accuracy"]:.1%} on 300 questions from a seed never used in
  training (`mmaccel.prune.testbed.video_questions.heldout_questions`); by question: {by_kind}.
- **Prompt**: `<video> what colour is the new shape ? answer :` (the processor's chat template builds it).

Limitations: toy domain; the model knows only the vocabulary above and has never seen a still image.
"""
    card += bench_section(
        out,
        BENCH_COMMAND,
        """TTFT is vision encoder + prefill, the median over clips, at batch 1 and for batches of 8. Unpruned and
pruned prefills of the same clips are timed warm, in alternating blocks of four; each speed-up divides the
medians. Agreement is with the unpruned model's answers. `proportional=true` adds proportional attention (see
`mmaccel/prune/base.py`).
Visual tokens are the {visual_tokens:.0f} frame tokens of a clip; its closing newline token is never
pruned. HoliTom's count is after its inner merge, which halves the tokens again.""",
    )
    write_atomic(out / "README.md", lambda tmp: Path(tmp).write_text(card))


if __name__ == "__main__":
    main()
