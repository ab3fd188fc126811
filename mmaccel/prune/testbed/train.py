"""Train the pruning testbed: a small ``LlavaForConditionalGeneration`` (CLIP-style vision tower, Llama
language model) on the scene questions of :mod:`mmaccel.prune.testbed.questions`.

    python -m mmaccel.prune.testbed.train --out mmaccel/prune/weights --minutes 55

Runs on one CPU thread. Data is generated on the fly (a fresh scene and question per example, never the
held-out seed), the loss is on the answer word and the end token only, and the script writes the
safetensors weights, the processor files and a model card with the held-out accuracy it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mmaccel.data.scenes import render
from mmaccel.io import write_atomic, write_json_atomic

from .auxiliary import ImageAuxiliary
from .questions import (
    IMAGE_SIZE,
    PATCH_SIZE,
    SHAPE_COLOURS,
    SHAPE_KINDS,
    build_processor,
    heldout_questions,
    make_example,
    make_scene,
    question_of_kind,
)


def build_model(processor, llm_layers: int = 4):
    """The untrained testbed: CLIP-style tower (2 layers, width 96), 2-layer projector, Llama (``llm_layers``
    layers, width 128)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=96,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=llm_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=processor.image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    return LlavaForConditionalGeneration(config)


def make_batch(processor, examples: list[dict]) -> dict:
    """Prompt + answer + end token, right-padded; labels only on the answer and the end token.

    Examples hold an ``"image"`` or (all of them) a ``"video"``; the pixel tensors the processor makes for them
    (``pixel_values`` or ``pixel_values_videos``) are passed through. An example's optional ``"followups"``,
    (question, answer) pairs, are appended as further turns with loss on their answers too: more answers per
    encoded image or video.
    """
    tokenizer = processor.tokenizer
    kind = "video" if "video" in examples[0] else "image"
    token = getattr(processor, f"{kind}_token", f"<{kind}>")
    prompts = [f"{token} {e['question']} answer :" for e in examples]
    media = {f"{kind}s": [e[kind] for e in examples]}
    encoded = processor(text=prompts, return_tensors="pt", padding=True, **media)
    rows, labels = [], []
    for ids, keep, e in zip(encoded["input_ids"].tolist(), encoded["attention_mask"].bool().tolist(), examples):
        ids = [i for i, k in zip(ids, keep) if k]
        target = tokenizer(f"{e['answer']} </s>", add_special_tokens=False)["input_ids"]
        row, label = list(ids) + target, [-100] * len(ids) + target
        for question, answer in e.get("followups", ()):
            prompt = tokenizer(f"{question} answer :", add_special_tokens=False)["input_ids"]
            target = tokenizer(f"{answer} </s>", add_special_tokens=False)["input_ids"]
            row += prompt + target
            label += [-100] * len(prompt) + target
        rows.append(row)
        labels.append(label)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    label_ids = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "labels": label_ids,
        **{k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")},
    }


def example_with_followups(rng: np.random.Generator) -> dict:
    """A fresh scene asked every question kind, in random order: three answers per encoded image instead of one."""
    scene = make_scene(rng)
    return _asked(scene, list(dict.fromkeys(question_of_kind(scene, int(k), rng) for k in rng.permutation(3))))


def example_with_every_question(rng: np.random.Generator) -> dict:
    """A fresh scene asked every question it has, in random order: each shape's colour, the count, and left-of for
    every pair of shapes (either way round). Up to seven answers per encoded image; colour and left-of, the
    questions that need a shape's kind, get most of them."""
    scene = make_scene(rng)
    shapes = scene.shapes
    pairs = [(f"what colour is the {s.kind} ?", s.colour) for s in shapes]
    pairs.append(question_of_kind(scene, 1, rng))
    for i in range(len(shapes)):
        for j in range(i + 1, len(shapes)):
            a, b = (shapes[i], shapes[j]) if rng.random() < 0.5 else (shapes[j], shapes[i])
            pairs.append((f"is the {a.kind} left of the {b.kind} ?", "yes" if a.center[0] < b.center[0] else "no"))
    return _asked(scene, [pairs[k] for k in rng.permutation(len(pairs))])


def _asked(scene, pairs: list[tuple[str, str]]) -> dict:
    """A training example of ``scene``: its first (question, answer) pair, the rest as followups."""
    (question, answer), *followups = pairs
    return {
        "image": render(scene, IMAGE_SIZE),
        "question": question,
        "answer": answer,
        "followups": followups,
        "scene": scene,
    }


@torch.no_grad()
def evaluate(model, processor, questions: list[dict], batch_size: int = 50) -> float:
    from .inputs import build_inputs, normalise

    model.eval()
    correct = 0
    for q in questions:
        inputs = build_inputs(processor, q)
        logits = model(**inputs, logits_to_keep=1).logits[0, -1]
        word = processor.tokenizer.decode([int(logits.argmax())])
        correct += normalise(word) == normalise(q["answer"])
    model.train()
    return correct / len(questions)


def train_for(
    model,
    processor,
    make_one: Callable[[], dict],
    heldout: list[dict],
    minutes: float,
    batch_size: int,
    lr: float,
    eval_every: int,
    log_every: int = 25,
    auxiliary: torch.nn.Module | None = None,
) -> tuple[int, list[dict]]:
    """Train ``model`` on batches of ``make_one()`` examples for ``minutes`` of wall time; (steps, eval history).

    AdamW, loss on the answers only (:func:`make_batch`), plus ``auxiliary.loss(examples, batch)`` when given (the
    dense heads of :mod:`.auxiliary`, trained alongside and not part of ``model``); held-out accuracy on 100
    questions every ``eval_every`` steps. The schedule is over wall time because the machine is shared and steps per
    minute vary: warm up over 100 steps, then cosine down to 5% by the end of the budget.
    """
    parameters = list(model.parameters()) + (list(auxiliary.parameters()) if auxiliary is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    budget = minutes * 60
    start = time.perf_counter()
    step, history = 0, []
    while (elapsed := time.perf_counter() - start) < budget:
        scale = min(1.0, (step + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        examples = [make_one() for _ in range(batch_size)]
        batch = make_batch(processor, examples)
        loss = model(**batch).loss
        extra = auxiliary.loss(examples, batch) if auxiliary is not None else loss.new_zeros(())
        optimizer.zero_grad(set_to_none=True)
        (loss + extra).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        step += 1
        if step % log_every == 0:
            print(
                f"step {step} loss {loss.item():.4f} auxiliary {extra.item():.4f} lr {lr * scale:.2e} "
                f"{elapsed / 60:.1f} min",
                flush=True,
            )
        if step % eval_every == 0:
            accuracy = evaluate(model, processor, heldout[:100])
            history.append({"step": step, "minutes": round(elapsed / 60, 2), "heldout_accuracy_100": accuracy})
            print(f"step {step} held-out accuracy (100) {accuracy:.3f}", flush=True)
    return step, history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "weights")
    parser.add_argument("--minutes", type=float, default=55.0, help="wall-clock training budget")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--init", type=Path, default=None, help="continue from this testbed folder's weights")
    parser.add_argument(
        "--followups", action="store_true", help="ask every question kind of each training scene, not just one"
    )
    parser.add_argument(
        "--every-question",
        action="store_true",
        help="ask each training scene every question it has: each shape's colour, the count, left-of for every pair",
    )
    parser.add_argument(
        "--auxiliary",
        action="store_true",
        help="also train patch heads on the vision tower (kind, colour, centre of the shape under each patch)",
    )
    parser.add_argument("--llm-layers", type=int, default=4, help="decoder layers of the Llama language model")
    parser.add_argument(
        "--card", action="store_true", help="only rewrite --out's README.md from its weights and records"
    )
    args = parser.parse_args(argv)
    if args.followups and args.every_question:
        parser.error("--followups and --every-question are alternatives; give one")
    torch.set_num_threads(1)
    if args.card:
        write_card(args.out)
        return

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    processor = build_processor()
    if args.init is not None:
        from transformers import LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(args.init, attn_implementation="sdpa").train()
        print(f"continuing from {args.init}", flush=True)
    else:
        model = build_model(processor, args.llm_layers).train()
    previous = json.loads((args.init / "training.json").read_text()) if args.init is not None else None
    heldout = heldout_questions(300)
    auxiliary = ImageAuxiliary(model, SHAPE_KINDS, SHAPE_COLOURS, IMAGE_SIZE, PATCH_SIZE) if args.auxiliary else None
    start = time.perf_counter()
    step, history = train_for(
        model,
        processor,
        _example_maker(args, rng),
        heldout,
        args.minutes,
        args.batch,
        args.lr,
        args.eval_every,
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
    summary = {
        "steps": step,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "followups": args.followups,
        "every_question": args.every_question,
        "auxiliary": args.auxiliary,
        "llm_layers": model.config.text_config.num_hidden_layers,
        "budget_minutes": args.minutes,
        "minutes": minutes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_accuracy": accuracy,
        "heldout_accuracy_by_question": by_kind,
        "history": history,
        "continued_from": previous,
    }
    write_json_atomic(args.out / "training.json", summary)
    (args.out / "bench.json").unlink(missing_ok=True)  # it measured the weights just replaced
    write_card(args.out)


def _example_maker(args: argparse.Namespace, rng: np.random.Generator) -> Callable[[], dict]:
    if args.every_question:
        return lambda: example_with_every_question(rng)
    if args.followups:
        return lambda: example_with_followups(rng)
    return lambda: make_example(rng)


def accuracy_by_kind(model, processor, questions: list[dict]) -> tuple[dict[str, float], float]:
    """Accuracy per question ``kind``, and over all ``questions``, from one pass."""
    groups: dict[str, list[dict]] = {}
    for q in questions:
        groups.setdefault(q["kind"], []).append(q)
    by_kind = {kind: evaluate(model, processor, qs) for kind, qs in sorted(groups.items())}
    overall = sum(by_kind[kind] * len(qs) for kind, qs in groups.items()) / len(questions)
    return by_kind, overall


BENCH_COMMAND = (
    "mmaccel bench prune --model default "
    "--methods none,fastv,visionzip,divprune,divprune:proportional=true,dart,tome,tome:proportional=true,holitom "
    "--keep 0.5,0.25,0.1 --batch-size 8 --json mmaccel/prune/weights/bench.json"
)


def _command(run: dict) -> str:
    """The command line of one training run, from its training.json record."""
    minutes = run.get("budget_minutes", round(run["minutes"]))
    flags = f"--minutes {minutes:g} --lr {run['lr']} --seed {run['seed']} --batch {run['batch']}"
    for flag in ("followups", "every_question", "auxiliary"):
        if run.get(flag):
            flags += " --" + flag.replace("_", "-")
    if run.get("llm_layers", 4) != 4:
        flags += f" --llm-layers {run['llm_layers']}"
    return f"python -m mmaccel.prune.testbed.train {flags}"


def _what_was_asked(run: dict) -> str:
    if run.get("every_question"):
        return "every question of each scene (each shape's colour, the count, left-of for every pair)"
    if run.get("followups"):
        return "every question kind asked of each scene"
    return "one question per scene"


def bench_section(out: Path, command: str, notes: str) -> str:
    """A model card's bench section from ``out/bench.json`` (empty when there is none): header, ``command``,
    what prefill FLOPs are, ``notes`` (formatted with the first record's fields) and the table."""
    bench = out / "bench.json"
    if not bench.is_file():
        return ""
    from ..table import markdown_table

    records = json.loads(bench.read_text())
    return f"""
## Pruning bench ({records[0]["questions"]} held-out questions, one process, shared 2-core CPU)

Command: `{command}`.
Prefill FLOPs are the language model's, computed analytically (`mmaccel/prune/flops.py`) and given relative to
unpruned. {notes.format(**records[0])}

{markdown_table(records)}
"""


def write_card(out: Path) -> None:
    """Write the model card README.md of the testbed folder ``out``: its training.json record, its held-out accuracy
    by question (measured here, on the folder's weights) and, when the folder holds a ``bench.json`` from
    :data:`BENCH_COMMAND`, the bench table."""
    from transformers import LlavaForConditionalGeneration

    run = json.loads((out / "training.json").read_text())
    processor = build_processor()
    model = LlavaForConditionalGeneration.from_pretrained(out, attn_implementation="sdpa").eval()
    by_kind, accuracy = accuracy_by_kind(model, processor, heldout_questions(300))
    layers = model.config.text_config.num_hidden_layers
    stages = [run]
    while stages[0].get("continued_from"):
        stages.insert(0, stages[0]["continued_from"])
    lines = []
    for i, stage in enumerate(stages):
        init = "" if i == 0 else " --init <the previous stage's folder>"
        lines.append(
            f"  {i + 1}. `{_command(stage)}{init}`: {stage['steps']} steps of batch {stage['batch']}, "
            f"{_what_was_asked(stage)}, {stage['minutes']:.1f} minutes, held-out {stage['heldout_accuracy']:.1%}"
        )
    total = sum(stage["minutes"] for stage in stages)
    auxiliary = ""
    if any(stage.get("auxiliary") for stage in stages):
        auxiliary = (
            "\n  With `--auxiliary`, linear heads on the vision tower's last layer also learn, for every patch, the"
            "\n  kind, colour and centre of the shape under it (`mmaccel/prune/testbed/auxiliary.py`); they exist"
            "\n  only during training and are not part of the shipped model."
        )
    by_question = ", ".join(f"{kind} {value:.1%}" for kind, value in by_kind.items())
    card = f"""# mmaccel pruning testbed (LLaVA architecture, {run["parameters"] / 1e6:.2f} M parameters)

A small `LlavaForConditionalGeneration` that visual-token pruning (`mmaccel.prune`, `mmaccel bench prune`)
is measured on. Trained from scratch in this repository; no external data or weights.

- **Architecture**: CLIP-style vision tower ({IMAGE_SIZE}x{IMAGE_SIZE} input, {PATCH_SIZE}x{PATCH_SIZE} patches ->
  {(IMAGE_SIZE // PATCH_SIZE) ** 2} visual tokens + [CLS], 2 layers, width 96), 2-layer GELU projector, Llama language
  model ({layers} layers, width 128, 4 heads, MLP 384), word-level vocabulary of {len(processor.tokenizer)} tokens.
  fp32, SDPA attention.
- **Data**: scenes of 1-3 distinct shapes (circle, square, triangle, star) in six colours from
  `mmaccel.data.scenes` (`random_scene` + `render`), drawn fresh every step; questions: colour of a named
  shape, number of shapes, whether one shape is left of another. One-word answers. Held-out examples ask
  one question of each scene.
- **Training** ({total:.1f} minutes on one CPU thread; AdamW, wall-clock cosine schedule, loss on the answer words
  and end tokens):
{chr(10).join(lines)}{auxiliary}
- **Held-out accuracy (unpruned)**: {accuracy:.1%} on 300 questions from a seed never used in training
  (`mmaccel.prune.testbed.questions.heldout_questions`); by question: {by_question}.
- **Prompt**: `<image> what colour is the square ? answer :` (the processor's chat template builds it).

Limitations: toy domain; the model knows only the vocabulary above.
"""
    card += bench_section(
        out,
        BENCH_COMMAND,
        """TTFT is vision encoder + prefill, the median over questions, at batch 1 and for batches of 8 requests
prefilled together. Unpruned and pruned prefills of the same requests are timed warm, in alternating blocks of
four; each speed-up divides the two medians. Agreement is with the unpruned model's answers. HoliTom needs video,
which this LLaVA model does not take. `divprune proportional=true` adds proportional attention to DivPrune (each
kept token weighs in attention as much as the tokens nearest to it together); `tome proportional=true` the same
for ToMe.""",
    )
    write_atomic(out / "README.md", lambda tmp: Path(tmp).write_text(card))


if __name__ == "__main__":
    main()
