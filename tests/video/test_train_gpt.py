"""The video GPT's training script: every class token's embedding learns, and a continued run keeps its lineage."""

import json

import pytest

import torch
from transformers import LlamaForCausalLM

from mmaccel.video.data import NUM_CLASSES
from mmaccel.video.model import save_video_gpt, video_config
from mmaccel.video.training import train_gpt


def test_every_class_embedding_gets_a_gradient():
    # The pad id used to be the codebook size, which is class 0's token: its row stayed at zero, untrained.
    k = 16
    config = video_config("video-tiny", k, NUM_CLASSES, 8)
    assert config.pad_token_id is None
    model = LlamaForCausalLM(config)
    ids = torch.arange(k, k + NUM_CLASSES + 1)[:, None].repeat(1, 4)
    model(input_ids=ids).logits.sum().backward()
    grad = model.model.embed_tokens.weight.grad[k:]
    assert (grad.norm(dim=1) > 0).all()


def test_a_continued_run_unfreezes_the_old_pad_row_and_records_its_lineage(tmp_path):
    old = video_config("video-tiny", 1024, NUM_CLASSES, 2 * 64)
    old.pad_token_id = 1024  # a model trained before the fix
    model = LlamaForCausalLM(old)
    meta = {"codebook_size": 1024, "num_classes": NUM_CLASSES, "frames": 2, "grid": 8, "resolution": 32, "steps": 7}
    save_video_gpt(model, meta, tmp_path / "old")
    train_gpt.main(["--init", str(tmp_path / "old"), "--out", str(tmp_path / "new"), "--clips", "4",
                    "--frames", "2", "--batch", "2", "--minutes", "0.01", "--data-seed", "7000",
                    "--cond-frames", "1", "--cond-weight", "4"])
    saved = json.loads((tmp_path / "new" / "gpt_config.json").read_text())
    assert saved["llama"].get("pad_token_id") is None
    assert saved["continued_from_steps"] == 7 and saved["steps"] >= 7
    assert (saved["seed_base"], saved["cond_frames"], saved["cond_weight"]) == (7000, 1, 4.0)


@pytest.mark.parametrize("sink", [False, True])
def test_eval_gpt_reports_the_first_frames_class_gain(tmp_path, sink):
    from mmaccel.video.testing import save_tiny_video_model
    from mmaccel.video.training.eval_gpt import evaluate

    folder = save_tiny_video_model(tmp_path, frames=2, grid=8, num_classes=NUM_CLASSES, sink=sink)
    gain = evaluate(folder, clips=4, batch=2)["first_frame_class_gain"]
    assert set(gain) == {"wrong_shape", "wrong_motion", "null"}
    assert any(abs(g) > 0 for g in gain.values())  # a random model reads its prompt: the gains are not all zero


def test_a_continued_sink_model_keeps_its_sink_without_the_flag(tmp_path):
    config = video_config("video-tiny", 1024, NUM_CLASSES, 2 * 64)
    config.vocab_size += 1
    meta = {"codebook_size": 1024, "num_classes": NUM_CLASSES, "frames": 2, "grid": 8, "resolution": 32,
            "steps": 3, "sink_token": 1024 + NUM_CLASSES + 1}
    save_video_gpt(LlamaForCausalLM(config), meta, tmp_path / "old")
    train_gpt.main(["--init", str(tmp_path / "old"), "--out", str(tmp_path / "new"), "--clips", "4",
                    "--frames", "2", "--batch", "2", "--minutes", "0.01", "--data-seed", "7000"])
    saved = json.loads((tmp_path / "new" / "gpt_config.json").read_text())
    assert saved["sink_token"] == meta["sink_token"] and saved["llama"]["vocab_size"] == config.vocab_size


def test_the_contrast_class_has_another_shape_and_the_same_motion():
    from mmaccel.video.data import CLASSES

    k = 16
    condition = (k + torch.arange(NUM_CLASSES)).repeat(50)
    wrong = train_gpt.other_shape(condition, k, torch.Generator().manual_seed(0))
    for c, w in zip((condition - k).tolist(), (wrong - k).tolist()):
        assert CLASSES[w][0] != CLASSES[c][0] and CLASSES[w][1] == CLASSES[c][1]
    assert len(set(zip((condition - k).tolist(), (wrong - k).tolist()))) == NUM_CLASSES * 3  # every other shape


def _contrast_setup(sink: bool):
    from mmaccel.video.model import prompt_head

    torch.manual_seed(0)
    k, frame = 16, 4
    model = LlamaForCausalLM(video_config("video-tiny", k, NUM_CLASSES, 3 * frame))
    labels = torch.arange(NUM_CLASSES)
    codes = (labels[:, None] * 2 + torch.arange(3 * frame)) % k  # each class its own first frame
    sink_id = k + NUM_CLASSES if sink else None  # any id the tiny vocabulary has: only its position matters
    ids = torch.cat([prompt_head(labels + k, sink_id), codes], 1)
    return model, ids, k, 2 if sink else 1, frame


def _contrast(model, ids, true_nll, k, prefix, frame, margin, gen):
    sink = int(ids[0, 0]) if prefix == 2 else None
    return train_gpt.first_frame_contrast(
        model, ids[:, prefix - 1], ids[:, prefix : prefix + frame], true_nll, k, sink, margin, gen
    )


def _first_frame_nll(model, ids, k, prefix, frame):
    logits = model(input_ids=ids[:, : prefix + frame - 1]).logits[:, prefix - 1 :, :k]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, k), ids[:, prefix : prefix + frame].reshape(-1), reduction="none"
    ).reshape(len(ids), frame)


@pytest.mark.parametrize("sink", [False, True])
def test_training_on_the_contrast_makes_the_first_frame_depend_on_the_shape(sink):
    model, ids, k, prefix, frame = _contrast_setup(sink)
    wrong = ids.clone()
    wrong[:, prefix - 1] = k + (ids[:, prefix - 1] - k + 2) % NUM_CLASSES

    def gap() -> float:
        with torch.no_grad():
            return float((_first_frame_nll(model, wrong, k, prefix, frame) - _first_frame_nll(model, ids, k, prefix, frame)).mean())

    before = gap()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = _contrast(model, ids, _first_frame_nll(model, ids, k, prefix, frame), k, prefix, frame, 1.0, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert gap() > before + 0.3


def test_the_contrast_is_the_hinge_and_ignores_unconditional_rows():
    model, ids, k, prefix, frame = _contrast_setup(False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        true_nll = _first_frame_nll(model, ids, k, prefix, frame)
        # A true loss far above any wrong class's: the gap is hugely negative, so the hinge is margin - gap.
        big = _contrast(model, ids, true_nll + 100.0, k, prefix, frame, 0.05, gen)
        assert 100.0 < float(big) < 100.0 + 0.05 + 10.0
        # A true loss far below: the margin is met and nothing is asked.
        assert float(_contrast(model, ids, true_nll - 100.0, k, prefix, frame, 0.05, gen)) == 0.0
        null = ids.clone()
        null[:, 0] = k + NUM_CLASSES
        assert float(_contrast(model, null, true_nll + 100.0, k, prefix, frame, 0.05, gen)) == 0.0


def test_a_run_with_the_contrast_records_it(tmp_path):
    config = video_config("video-tiny", 1024, NUM_CLASSES, 2 * 64)
    meta = {"codebook_size": 1024, "num_classes": NUM_CLASSES, "frames": 2, "grid": 8, "resolution": 32, "steps": 3}
    save_video_gpt(LlamaForCausalLM(config), meta, tmp_path / "old")
    train_gpt.main(["--init", str(tmp_path / "old"), "--out", str(tmp_path / "new"), "--clips", "4",
                    "--frames", "2", "--batch", "2", "--minutes", "0.01", "--data-seed", "7000",
                    "--contrast-weight", "1", "--contrast-margin", "0.1"])
    saved = json.loads((tmp_path / "new" / "gpt_config.json").read_text())
    assert (saved["contrast_weight"], saved["contrast_margin"]) == (1.0, 0.1)
    with pytest.raises(SystemExit):
        train_gpt.main(["--out", str(tmp_path / "bad"), "--minutes", "0.01", "--contrast-margin", "0"])
