# ruff: noqa: E501  (the model card template holds long markdown table rows)
"""Measure the default image model's AR baseline and write its model card (``weights/README.md``).

    python -m mmaccel.image.training.model_card --num-images 500

Figures: parameter counts, the AR baseline's mean per-token entropy of the distribution it samples from
(so the model is shown not to be nearly deterministic), its class accuracy under the held-out classifier, and
its domain FID against real images of the generator.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mmaccel.io import save_image_atomic, write_atomic
from mmaccel.sampling import SamplingConfig, target_probs

from ..bench import run_bench
from ..defaults import DEFAULTS
from ..pipeline import DEFAULT_WEIGHTS, ImageARPipeline


@torch.no_grad()
def mean_entropy(
    pipe: ImageARPipeline, labels: list[int], tokens: torch.Tensor, guidance_scale: float, sampling: SamplingConfig
) -> float:
    """Mean entropy (nats) of the processed, guided distribution at every position of AR samples."""
    gpt = pipe.model.gpt
    labels_t = torch.tensor(labels, device=pipe.device)
    inputs = tokens[:, :-1].to(pipe.device)
    cond = gpt(labels_t, inputs)
    if guidance_scale != 1.0:
        uncond = gpt(torch.full_like(labels_t, gpt.config.num_classes), inputs)
        cond = uncond + guidance_scale * (cond - uncond)
    p = target_probs(cond, sampling)
    return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_samples(images: list, labels: list[int], path: Path, per_class: int = 6) -> None:
    """The first ``per_class`` images of each class, one row per class in class order, written atomically."""
    from PIL import Image

    classes = sorted(set(labels))
    w, h = images[0].size
    canvas = Image.new("RGB", (per_class * w, len(classes) * h))
    for row, c in enumerate(classes):
        for col, i in enumerate([i for i, label in enumerate(labels) if label == c][:per_class]):
            canvas.paste(images[i], (col * w, row * h))
    save_image_atomic(canvas.resize((canvas.width * 2, canvas.height * 2), Image.NEAREST), path)


CARD = """# mmaccel default image model

A class-conditional AR image model in the LlamaGen architecture, trained on this machine on procedurally drawn
shapes (`mmaccel.data.scenes`, {num_classes} classes: {class_names}). 64x64 images, a 16x16 token grid, a
{codebook}-entry VQ codebook. Everything here was made by commands in this repository, with no downloads.

| part | file | parameters | trained by |
|---|---|---|---|
| VQ tokenizer (`VQ-small`) | `vq.safetensors` | {vq_params:,} | `python -m mmaccel.image.training.train_tokenizer --out image/weights --minutes 25 --threads 1` (see `vq.md`) |
| GPT (`GPT-Mini`) | `gpt.safetensors` | {gpt_params:,} | `python -m mmaccel.image.training.train_gpt --out image/weights --minutes 85 --images 20000` (see "GPT training") |
| draft GPT (`GPT-Draft`) | `draft.safetensors` | {draft_params:,} | `python -m mmaccel.image.training.train_gpt --out image/weights --draft --minutes 11` (distilled from the GPT) |
| EAGLE draft head | `eagle.safetensors` | {eagle_params:,} | `python -m mmaccel.image.training.distill_eagle --out /work/train/eagle --minutes 45 --threads 1`, then copied here (see `eagle.md`) |
| held-out shape classifier | `classifier.safetensors` | {clf_params:,} | `python -m mmaccel.image.training.train_classifier --out image/weights --minutes 20 --images 30000 --threads 1` (see `classifier.md`) |

Data: `mmaccel.data.scenes.make_dataset(n, seed, style=...)`; each part trains on its own seeds, the classifier on
seeds no other part uses. The tokenizer and the classifier learn the `"broad"` style (shapes of 0.3-0.7 of the
image side, free rotation, solid / striped / dotted, flat / gradient / noise backgrounds), so both cover more
than the GPT is asked to draw. The GPT, the draft and the bench's FID reference use the
`"generation"` style: large solid shapes (0.55-0.8 of the side) near the centre (offsets up to 0.06 of the
side), rotation within +-15 degrees, flat or gradient background; colour, size, position, rotation and
background still vary, in narrower ranges, so that a 3M-parameter GPT can learn it in CPU hours.

## GPT training

`python -m mmaccel.image.training.train_gpt --out image/weights --minutes 85 --images 20000` trains the shipped GPT from
scratch in one run: next-token cross-entropy on the tokens of 20,000 `generation`-style images, labels dropped to
the null class with probability 0.1 (for guidance), AdamW at peak learning rate 2e-3 with a cosine schedule over
the wall-clock budget, batch 16, two threads; {gpt_minutes:g} minutes on the 2-core CPU.

How the recipe was found (earlier runs, not needed to reproduce the weights): with LlamaGen's zeroed rotary rows at
the class position every attention score to the class token is fixed at 0, and after 75 minutes of training a
GPT-Mini's validation loss with the true class and with a wrong one differed by 0.003 nats (1.719 against 1.722;
samples were blobs unrelated to the class). `GPTConfig.condition_rope="identity"` (our small configs only; official checkpoints keep
LlamaGen's zero rows) leaves the class position unrotated, and samples become shapes of the requested class within
20 minutes. Raster AR of shapes anywhere in the frame, in free rotation, was out of reach of 3M parameters in CPU
hours, hence the narrower `generation` style.

## EAGLE draft head

`eagle.safetensors` (516,480 parameters; config `eagle_config.json`) is an EAGLE head (Li et al. 2024) for the
GPT: `fc` over [token embedding; hidden state] and one Llama layer without input norm, read through the GPT's own
output layer (SafeAILab/EAGLE's construction). `python -m mmaccel.image.training.distill_eagle --out
/work/train/eagle --minutes 45 --threads 1` distilled it from 1,152 of the GPT's own samples (guidance 2.0,
temperature 0.8) in 45 minutes on one contended thread (1,816 steps), reaching a teacher-forced first-draft
acceptance `sum min(p, q)` of 0.693 at temperature 0.8; over the default settings `eagle` (exact rule, window 5)
accepts 2.54 tokens per forward: 2.46x fewer forwards than AR, against 2.08x for the draft GPT
(`bench/image_eagle.json`, `bench/image_eagle_b4.json`). Data, loss, departures and the bench: `eagle.md`.

## AR baseline (measured by `{command}`)

Sampling: guidance scale {guidance_scale}, temperature {temperature}, top-k {top_k}, top-p {top_p};
{num_images} images, classes in turn, seeds 0..{last_seed}.

| figure | value |
|---|---|
| mean per-token entropy of the sampled distribution | {entropy:.3f} nats (uniform over the codebook: {uniform:.3f}) |
| class accuracy (held-out classifier) | {accuracy:.1%} |
| domain FID vs {num_real} real images | {fid:.2f} |
| FID of a second AR seed set (noise floor) | {fid2:.2f} |

AR samples with these settings, one row per class in class order (`samples.png`, written by this command):

![AR samples](samples.png)

{status}

License: Apache-2.0.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--num-real", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--gpt-minutes", type=float, default=85, help="the GPT's training time, for the card")
    parser.add_argument("--status", default="", help="a closing paragraph for the card (what the figures mean)")
    args = parser.parse_args(argv)
    folder = Path(args.model) if args.model else DEFAULT_WEIGHTS
    records = run_bench(
        str(folder),
        methods=["ar"],
        num_images=args.num_images,
        num_real=args.num_real,
        batch_size=args.batch_size,
        guidance_scale=DEFAULTS["guidance_scale"],
        temperature=DEFAULTS["temperature"],
        top_k=DEFAULTS["top_k"],
        top_p=DEFAULTS["top_p"],
    )
    ar, ar2 = records[0], records[-1]
    pipe = ImageARPipeline.from_pretrained(folder)
    labels = [i % pipe.num_classes for i in range(min(args.num_images, 100))]
    out = pipe(
        labels,
        method="ar",
        guidance_scale=DEFAULTS["guidance_scale"],
        temperature=DEFAULTS["temperature"],
        top_k=DEFAULTS["top_k"],
        top_p=DEFAULTS["top_p"],
        progress=False,
    )
    sampling = SamplingConfig(DEFAULTS["temperature"], DEFAULTS["top_k"], DEFAULTS["top_p"])
    entropy = mean_entropy(pipe, labels, out.tokens, DEFAULTS["guidance_scale"], sampling)
    from mmaccel.data.scenes import CLASS_NAMES

    from ..classifier import ShapeClassifier

    clf = ShapeClassifier.from_pretrained(folder / "classifier.safetensors")
    figures = dict(
        num_classes=len(CLASS_NAMES),
        class_names=", ".join(CLASS_NAMES),
        codebook=pipe.model.vocab_size,
        vq_params=parameter_count(pipe.family.vq),
        gpt_params=parameter_count(pipe.model.gpt),
        draft_params=parameter_count(pipe.draft.gpt) if pipe.draft else 0,
        clf_params=parameter_count(clf),
        eagle_params=parameter_count(pipe.eagle) if pipe.eagle is not None else 0,
        command=f"python -m mmaccel.image.training.model_card --num-images {args.num_images} --gpt-minutes {args.gpt_minutes:g}",
        num_images=args.num_images,
        last_seed=args.num_images - 1,
        num_real=args.num_real,
        entropy=entropy,
        uniform=float(torch.log(torch.tensor(float(pipe.model.vocab_size)))),
        accuracy=ar["class_accuracy"],
        fid=ar["fid"],
        fid2=ar2["fid"],
        gpt_minutes=args.gpt_minutes,
        status=args.status,
        **DEFAULTS,
    )
    save_samples(out.images, labels, folder / "samples.png")
    text = CARD.format(**figures)
    write_atomic(folder / "README.md", lambda tmp: Path(tmp).write_text(text))
    print(text)
    print(json.dumps({k: v for k, v in figures.items() if isinstance(v, (int, float))}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
