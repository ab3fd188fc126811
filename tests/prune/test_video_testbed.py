"""The video testbed: its clips and answers, its torchvision-free processor, and the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mmaccel.prune as P
from mmaccel.data.scenes import COLOURS
from mmaccel.prune.bench import DEFAULT_VIDEO_MODEL, load_model, run_bench
from mmaccel.prune.testbed import video_questions as V
from mmaccel.prune.testbed.inputs import build_inputs
from mmaccel.prune.testbed.video_questions import question_kind

SHIPPED = (DEFAULT_VIDEO_MODEL / "model.safetensors").is_file()
needs_weights = pytest.mark.skipif(not SHIPPED, reason="the video testbed weights are not in this checkout")


def _mask(frame: np.ndarray, colour: str) -> np.ndarray:
    # Shape interiors are drawn in exactly their named colour; no background comes near any of the six.
    return (frame == np.asarray(COLOURS[colour], np.uint8)).all(-1)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(mask, (dy, dx), axis=(0, 1))
    return out


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.fixture(scope="module")
def examples():
    return V.heldout_questions(12, seed=7)


def test_questions_are_deterministic_and_the_heldout_set_is_a_fixed_sequence(examples):
    again = V.heldout_questions(12, seed=7)
    assert [(e["question"], e["answer"]) for e in again] == [(e["question"], e["answer"]) for e in examples]
    assert all(np.array_equal(a["video"], b["video"]) for a, b in zip(again, examples))
    other = V.heldout_questions(3, seed=8)
    assert any(not np.array_equal(a["video"], b["video"]) for a, b in zip(other, examples))
    # The bench takes the first N held-out questions for --limit N: they must be a prefix of the full set.
    head = V.heldout_questions(3)
    assert [e["question"] for e in head] == [e["question"] for e in V.heldout_questions(5)[:3]]
    assert {question_kind(e["question"]) for e in examples} == {"direction", "appears", "moving"}


def test_the_mover_really_moves_in_the_stated_direction(examples):
    for e in examples:
        clip, video = e["clip"], e["video"]
        assert video.shape == (V.FRAMES, V.IMAGE_SIZE, V.IMAGE_SIZE, 3) and video.dtype == np.uint8
        first, last = (_centroid(_mask(video[t], clip.mover.colour)) for t in (0, V.FRAMES - 1))
        moved = (last - first) / V.IMAGE_SIZE
        step = np.asarray(V.STEPS[clip.direction])
        assert moved @ step > 0.35, (clip.direction, moved)  # travel is 0.4-0.55 of the frame
        assert abs(moved @ step[::-1]) < 0.03  # and only along that axis
        question, answer = V.questions_about(clip)[0]
        assert question == f"which way does the {clip.mover.colour} shape move ?" and answer == clip.direction


def test_the_newcomer_is_absent_at_first_and_present_at_the_end(examples):
    for e in examples:
        clip, video = e["clip"], e["video"]
        present = [int(_mask(frame, clip.newcomer.colour).sum()) for frame in video]
        assert present[0] == present[1] == 0
        assert all(n > 40 for n in present[-2:])
        assert all((n > 0) == (t >= clip.arrival) for t, n in enumerate(present))
        assert V.questions_about(clip)[1] == ("what colour is the new shape ?", clip.newcomer.colour)


def test_distractors_and_background_are_static_and_only_the_mover_moves(examples):
    for e in examples:
        clip, video = e["clip"], e["video"]
        for shape in clip.still:
            masks = [_mask(frame, shape.colour) for frame in video]
            assert masks[0].sum() > 40 and all(np.array_equal(m, masks[0]) for m in masks)
        # Every pixel away from the mover's path and the newcomer is the same in all frames.
        changed = (video != video[0]).any(-1).any(0)
        moving = _mask(video[-1], clip.newcomer.colour)
        for frame in video:
            moving |= _mask(frame, clip.mover.colour)
        assert not (changed & ~_dilate(moving, 3)).any()
        assert V.questions_about(clip)[2] == ("what colour is the moving shape ?", clip.mover.colour)
        kinds = [s.kind for s in (clip.mover, clip.newcomer, *clip.still)]
        colours = [s.colour for s in (clip.mover, clip.newcomer, *clip.still)]
        assert len(set(kinds)) == len(kinds) and len(set(colours)) == len(colours)


def test_processor_gives_onevision_video_inputs_and_round_trips_offline(tmp_path, examples):
    from transformers import AutoProcessor

    processor = V.build_processor()
    item = examples[0]
    inputs = build_inputs(processor, item)
    tokens = V.FRAMES * (V.IMAGE_SIZE // V.PATCH_SIZE // 2) ** 2 + 1  # pooled 2x2 per frame + one newline
    assert int((inputs["input_ids"] == processor.video_token_id).sum()) == tokens
    pixels = inputs["pixel_values_videos"]
    assert pixels.shape == (1, V.FRAMES, 3, V.IMAGE_SIZE, V.IMAGE_SIZE)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    expected = (torch.from_numpy(item["video"]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(pixels[0], expected)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    again = build_inputs(loaded, item)
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    assert torch.equal(again["pixel_values_videos"], pixels)


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED:
        pytest.skip("the video testbed weights are not in this checkout")
    return load_model(DEFAULT_VIDEO_MODEL)


def _answers(model, processor, items) -> list[str]:
    out = []
    with torch.inference_mode():
        for item in items:
            batch = build_inputs(processor, item)
            ids = model.generate(**batch, max_new_tokens=2, do_sample=False)
            out.append(processor.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)[0])
    return out


@needs_weights
def test_shipped_testbed_none_and_keep_one_answer_like_the_unpruned_model(shipped, examples):
    model, processor = shipped
    assert type(model).__name__ == "LlavaOnevisionForConditionalGeneration"
    items = examples[:3]
    reference = _answers(model, processor, items)
    for method in ("none", "holitom", "fastv"):
        with P.prune(model, method, keep=1.0) as session:
            assert session is None
            assert _answers(model, processor, items) == reference


@needs_weights
def test_holitom_merges_static_tokens_of_the_shipped_testbed(shipped, examples):
    model, processor = shipped
    batch = build_inputs(processor, examples[0])
    visual = V.FRAMES * 16  # the closing newline token is not prunable
    with P.prune(model, "holitom", keep=0.25) as session, torch.inference_mode():
        logits = model(**batch).logits
        stats = session.last_prefill
    assert torch.isfinite(logits).all()
    assert stats["visual_tokens"] == visual
    assert stats["visual_tokens_per_layer"][0] <= round(0.25 * visual) + 1
    assert stats["visual_tokens_per_layer"][-1] < stats["visual_tokens_per_layer"][0]  # the inner merge


@needs_weights
def test_bench_on_the_video_testbed_records_every_documented_field():
    records = run_bench("default-video", "none,holitom,tome", "0.25", limit=2, max_new_tokens=2)
    assert [(r["method"], r["keep"]) for r in records] == [("none", 1.0), ("holitom", 0.25), ("tome", 0.25)]
    fields = {
        "method", "keep", "questions", "visual_tokens", "visual_tokens_kept", "prefill_flops", "flops_ratio",
        "ttft_s", "ttft_speedup", "accuracy", "relative_accuracy", "agreement",
    }  # fmt: skip
    for r in records:
        assert fields <= r.keys() and r["questions"] == 2
        assert r["visual_tokens"] == V.FRAMES * 16  # the closing newline token is not prunable
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["agreement"] <= 1.0
    assert records[1]["visual_tokens_kept"] < records[0]["visual_tokens_kept"]
    assert records[1]["flops_ratio"] < 1.0


def test_training_batches_put_the_loss_on_every_answer_and_never_give_one_away():
    from mmaccel.prune.testbed.train import make_batch
    from mmaccel.prune.testbed.train_video import training_example

    rng = np.random.default_rng(0)
    examples = [training_example(rng) for _ in range(6)]
    for e in examples:
        asked = [e["question"], *(q for q, _ in e["followups"])]
        moving = next((i for i, q in enumerate(asked) if "moving" in q.split()), None)
        direction = next((i for i, q in enumerate(asked) if q.startswith("which way")), None)
        assert moving is None or direction is None or moving < direction  # the direction question names it
    processor = V.build_processor()
    batch = make_batch(processor, examples)
    assert batch["pixel_values_videos"].shape == (6, V.FRAMES, 3, V.IMAGE_SIZE, V.IMAGE_SIZE)
    for row, labels, e in zip(batch["input_ids"], batch["labels"], examples):
        answers = [e["answer"], *(a for _, a in e["followups"])]
        assert processor.tokenizer.decode(labels[labels != -100]).split() == [w for a in answers for w in (a, "</s>")]
        assert int((row == processor.video_token_id).sum()) == V.FRAMES * 16 + 1
