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
