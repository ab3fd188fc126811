"""Engine of ``mmaccel bench prune``: every method x keep ratio on the same questions, in one process.

One record per (method, keep): visual tokens kept, analytic LLM prefill FLOPs (:mod:`mmaccel.prune.flops`),
time to first token measured here (vision encoder + prefill, median over questions; at batch 1, and for
batches of ``batch_size`` requests prefilled together), accuracy on the questions, and agreement with the
unpruned model's answers. ``none`` always runs first: it is the reference for agreement and FLOPs ratio.

Every TTFT figure of a record comes from one paired measurement (:mod:`mmaccel.prune.timing`): a method's
unpruned and pruned prefills of the same requests are timed warm in alternating blocks of four, the record
gives both medians (``reference_ttft_s``, ``ttft_s``) and its speed-up divides them. The ``none`` record
gives the unpruned side of every pair of the bench (the median of all of them; timed on its own only when no
method ran), with a speed-up of exactly 1. A method may be named with its own parameters
(``divprune:proportional=true``), so that two settings of one method are measured side by side; its records
then carry ``params``.

Question files are JSON lines: ``{"image": "a.png" | "video": ["f0.png", ...], "question": ..., "answer": ...}``
with paths relative to the file, and optionally ``"kind"`` (e.g. ``"count"``): when every question has one, each
record also gives ``accuracy_by_kind``, which shows what a method breaks (the testbeds' questions have kinds).
The model folder must hold a processor (``AutoProcessor``) next to the weights; prompts use its chat template
when it has one.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmaccel.io import check_writable, write_json_atomic

from . import prune, timing
from .bench_arguments import check_arguments, variant_params
from .flops import prefill_flops
from .table import variant_label
from .testbed.inputs import build_batch, build_inputs, normalise

DEFAULT_MODEL = Path(__file__).parent / "weights"
DEFAULT_VIDEO_MODEL = Path(__file__).parent / "weights_video"
# Names of the shipped testbeds -> (folder, module whose `heldout_questions` they are measured on).
DEFAULT_MODELS = {
    "default": (DEFAULT_MODEL, "questions"),
    "default-video": (DEFAULT_VIDEO_MODEL, "video_questions"),
}
MODEL_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}


def load_model(path: str | Path):
    """Load a local LLaVA, LLaVA-OneVision or Qwen2-VL folder (SDPA, fp32) and its processor."""
    import transformers

    from .testbed import video_processor  # noqa: F401  (registers the torchvision-free OneVision processor)

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model: no config.json in {path}")
    config = transformers.AutoConfig.from_pretrained(path)
    if config.model_type not in MODEL_CLASSES:
        raise ValueError(
            f"model: model_type {config.model_type!r} is not supported; supported: {', '.join(MODEL_CLASSES.values())}"
        )
    cls = getattr(transformers, MODEL_CLASSES[config.model_type])
    model = cls.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    processor = transformers.AutoProcessor.from_pretrained(path)
    return model, processor


def read_questions(path: str | Path) -> list[dict]:
    """Questions from a JSON-lines file, with images (and video frames) loaded as RGB arrays."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question_file: {path} does not exist")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if "question" not in record or "answer" not in record or not ({"image", "video"} & record.keys()):
            raise ValueError(f"question_file: line {number} needs 'question', 'answer' and 'image' or 'video'")
        item = {"question": record["question"], "answer": str(record["answer"])}
        if "kind" in record:
            item["kind"] = str(record["kind"])
        if "image" in record:
            item["image"] = np.asarray(Image.open(path.parent / record["image"]).convert("RGB"))
        else:
            item["video"] = np.stack([np.asarray(Image.open(path.parent / f).convert("RGB")) for f in record["video"]])
        out.append(item)
    return out


def _answer_matches(prediction: str, answer: str) -> bool:
    want = normalise(answer)
    return bool(want) and normalise(prediction)[: len(want)] == want


def _visual_count(model, batch: dict) -> int:
    from .families import detect_family

    ids = batch["input_ids"]
    tokens = [model.config.image_token_id, getattr(model.config, "video_token_id", None)]
    count = int(sum((ids == t).sum() for t in tokens if t is not None))
    # A video's closing newline token is never pruned and not counted by the pruning session either.
    return count - sum(extra for _, _, extra in detect_family(model).video_layouts(batch))


def run_bench(
    model_path_or_default: str | Path = "default",
    methods: list[str] | str = "none,fastv,visionzip,divprune,dart,tome,holitom",
    keeps: list[float] | str = "0.5,0.25,0.1",
    question_file: str | Path | None = None,
    json_path: str | Path | None = None,
    *,
    max_new_tokens: int = 4,
    limit: int | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> list[dict]:
    """Benchmark pruning methods; returns the records (and writes them to ``json_path`` when given).

    ``model_path_or_default``: a local checkpoint folder, or ``"default"`` / ``"default-video"`` for the
    shipped image / video testbed, whose held-out questions are used when ``question_file`` is None. A method
    that cannot run on the model or the questions (e.g. a video method on images) gets a record with an
    ``error`` field. ``params`` values may be text (``"1"``, ``"true"``); each is typed by its method's
    signature. ``progress`` shows a progress bar on stderr.
    """
    methods, keeps, params, limit, batch_size = check_arguments(methods, keeps, params, limit, batch_size)
    if json_path is not None:
        check_writable(json_path)
    if model_path_or_default in DEFAULT_MODELS:
        import importlib

        folder, module = DEFAULT_MODELS[model_path_or_default]
        model, processor = load_model(folder)
        if question_file is None:
            heldout = importlib.import_module(f".testbed.{module}", __package__).heldout_questions
            # Held-out sets are drawn in sequence from one seed: the first `limit` are a prefix of the whole.
            questions = heldout(limit) if limit is not None else heldout()
        else:
            questions = read_questions(question_file)
    else:
        if question_file is None:
            raise ValueError("question_file is required for a model other than the default testbed")
        model, processor = load_model(model_path_or_default)
        questions = read_questions(question_file)
    return bench_model(
        model,
        processor,
        questions,
        methods,
        keeps,
        json_path,
        max_new_tokens=max_new_tokens,
        limit=limit,
        params=params,
        batch_size=batch_size,
        progress=progress,
    )


def bench_model(
    model,
    processor,
    questions: list[dict],
    methods: list[str],
    keeps: list[float],
    json_path: str | Path | None = None,
    *,
    max_new_tokens: int = 4,
    limit: int | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> list[dict]:
    """:func:`run_bench` on an already loaded model and question list.

    Accuracy, FLOPs and ``ttft_s`` come from batch-1 requests; with ``batch_size`` > 1, ``batch_ttft_s`` is
    also measured: the median time to the first tokens of ``batch_size`` requests prefilled together.
    """
    from tqdm import tqdm

    methods, keeps, params, limit, batch_size = check_arguments(methods, keeps, params, limit, batch_size)
    questions = questions[:limit] if limit is not None else questions
    if not questions:
        raise ValueError("questions: there are no questions to run")
    inputs = [build_inputs(processor, q) for q in questions]
    batches = None
    if batch_size > 1:
        full = len(questions) // batch_size * batch_size  # equal batches only, so their times compare
        batches = [build_batch(processor, questions[i : i + batch_size]) for i in range(0, full, batch_size)]
    runs = [("none", {}, 1.0)]
    for variant in methods:
        method, values = variant_params(variant, params)
        if method != "none":
            runs += [(method, values, keep) for keep in keeps]
    bar = tqdm(total=len(runs) * len(questions), unit="question", file=sys.stderr, disable=not progress)
    results = []
    with bar:
        for method, values, keep in runs:
            bar.set_description(variant_label(method, values) + (f" keep={keep}" if method != "none" else ""))
            done = bar.n + len(questions)
            try:
                results.append(
                    _run(model, processor, questions, inputs, method, keep, values, max_new_tokens, batches, bar)
                )
            except (ValueError, TypeError) as err:
                if method == "none":  # the reference itself cannot run: nothing to compare against
                    raise
                results.append(err)
            bar.update(done - bar.n)  # a method that stopped early still counts its questions as done
    reference = results[0]
    _time_reference(model, reference, [r for r in results[1:] if isinstance(r, dict)], inputs, batches)
    records = []
    for (method, values, keep), result in zip(runs, results):
        if isinstance(result, Exception):
            named = {"params": values} if values else {}
            records.append({"method": method, **named, "keep": keep, "error": str(result)})
        else:
            records.append(_record(method, keep, result, reference, len(questions), batch_size, values))
    if json_path is not None:
        write_json_atomic(json_path, records)
    return records


def _run(
    model,
    processor,
    questions: list[dict],
    inputs: list[dict],
    method: str,
    keep: float,
    params: dict,
    max_new_tokens: int,
    batches: list[dict] | None = None,
    bar=None,
) -> dict:
    """Answers, FLOPs and visual tokens of one (method, keep) on every question, and, for a method, its
    paired TTFT samples; the ``none`` run's TTFT is filled in by :func:`_time_reference`."""
    answers, flops, visual_kept, visual_full = [], [], [], []
    text_config = model.config.get_text_config()
    layers = text_config.num_hidden_layers
    timed = {}
    if method != "none":
        # Batched TTFT: the first token of every request in a batch, the serving case; the fixed per-call cost
        # is shared by the batch, so the share of pruned work is larger than at batch 1.
        timed["batch"] = timing.paired_prefills(model, batches, method, keep, params)
        timed["single"] = timing.paired_prefills(model, inputs, method, keep, params)
    with prune(model, method, keep=keep, **params) as session:
        with torch.inference_mode():
            for batch in inputs:
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
                prompt_length = batch["input_ids"].shape[1]
                answers.append(processor.batch_decode(out[:, prompt_length:], skip_special_tokens=True)[0])
                if session is not None and session.last_prefill is not None:
                    stats = session.last_prefill
                    tokens = stats["tokens_per_layer"]
                    visual_full.append(stats["visual_tokens"])
                    visual_kept.append(stats["visual_tokens_per_layer"][-1])
                else:
                    tokens = [int(batch["attention_mask"].sum())] * layers
                    visual = _visual_count(model, batch)
                    visual_full.append(visual)
                    visual_kept.append(visual)
                flops.append(prefill_flops(text_config, tokens))
                if bar is not None:
                    bar.update(1)
    correct = [_answer_matches(a, q["answer"]) for a, q in zip(answers, questions)]
    by_kind = None
    if all("kind" in q for q in questions):
        groups: dict[str, list[bool]] = {}
        for q, ok in zip(questions, correct):
            groups.setdefault(q["kind"], []).append(ok)
        by_kind = {kind: sum(oks) / len(oks) for kind, oks in sorted(groups.items())}
    result = {
        "answers": answers,
        "accuracy": sum(correct) / len(correct),
        "accuracy_by_kind": by_kind,
        "prefill_flops": statistics.mean(flops),
        "visual_tokens": statistics.mean(visual_full),
        "visual_tokens_kept": statistics.mean(visual_kept),
        "samples": timed,
    }
    if timed:
        (batch_unpruned, batch_pruned), (unpruned, pruned) = timed["batch"], timed["single"]
        result.update(
            reference_ttft_s=statistics.median(unpruned),
            ttft_s=statistics.median(pruned),
            reference_batch_ttft_s=_median(batch_unpruned),
            batch_ttft_s=_median(batch_pruned),
        )
    return result


def _time_reference(model, reference: dict, runs: list[dict], inputs: list[dict], batches: list[dict] | None) -> None:
    """The ``none`` record's TTFT: the unpruned side of every method's pairs, so that it was measured with the
    figures it is read against; timed on its own only when no method ran."""
    unpruned = [t for r in runs for t in r["samples"]["single"][0]]
    batch_unpruned = [t for r in runs for t in r["samples"]["batch"][0]]
    if not runs:
        unpruned = timing.unpruned_prefills(model, inputs)
        batch_unpruned = timing.unpruned_prefills(model, batches)
    reference.update(
        reference_ttft_s=statistics.median(unpruned),
        ttft_s=statistics.median(unpruned),
        reference_batch_ttft_s=_median(batch_unpruned),
        batch_ttft_s=_median(batch_unpruned),
    )


def _median(samples: list[float]) -> float | None:
    return statistics.median(samples) if samples else None


def _record(
    method: str, keep: float, result: dict, reference: dict, count: int, batch_size: int = 1, params: dict | None = None
) -> dict:
    agree = sum(normalise(a) == normalise(b) for a, b in zip(result["answers"], reference["answers"])) / count
    return {
        "method": method,
        **({"params": params} if params else {}),
        "keep": keep,
        "questions": count,
        "visual_tokens": result["visual_tokens"],
        "visual_tokens_kept": result["visual_tokens_kept"],
        "prefill_flops": result["prefill_flops"],
        "flops_ratio": result["prefill_flops"] / reference["prefill_flops"],
        "ttft_s": result["ttft_s"],
        "reference_ttft_s": result["reference_ttft_s"],
        "ttft_speedup": result["reference_ttft_s"] / result["ttft_s"],
        "batch_size": batch_size,
        "batch_ttft_s": result["batch_ttft_s"],
        "reference_batch_ttft_s": result["reference_batch_ttft_s"],
        "batch_ttft_speedup": (
            result["reference_batch_ttft_s"] / result["batch_ttft_s"] if result["batch_ttft_s"] else None
        ),
        "accuracy": result["accuracy"],
        **({"accuracy_by_kind": result["accuracy_by_kind"]} if result["accuracy_by_kind"] is not None else {}),
        "relative_accuracy": result["accuracy"] / reference["accuracy"] if reference["accuracy"] else None,
        "agreement": agree,
    }
