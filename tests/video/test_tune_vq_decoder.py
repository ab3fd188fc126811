"""Tuning the video VQ's decoder changes what tokens decode into, never which tokens a clip encodes to."""

import pytest
import torch

from mmaccel.models.vq import VQConfig, VQModel
from mmaccel.video.classifier import VideoClassifier
from mmaccel.video.data import NUM_CLASSES, make_clips
from mmaccel.video.training import tune_vq_decoder


@pytest.fixture()
def folder(tmp_path):
    torch.manual_seed(0)
    VQModel(VQConfig.named("VQ-tiny")).save_pretrained(tmp_path / "vq", "vq")
    VideoClassifier(NUM_CLASSES, width=4, arch="fusion").save(tmp_path / "classifier.safetensors")
    return tmp_path


def test_the_decoder_learns_and_the_tokens_stay(folder, capsys):
    tune_vq_decoder.main(["--vq", str(folder / "vq"), "--classifier", str(folder / "classifier.safetensors"),
                          "--out", str(folder / "tuned"), "--clips", "2", "--val-clips", "1", "--classifier-clips", "4", "--batch", "4",
                          "--lr", "1e-2", "--minutes", "0.01"])
    old = VQModel.from_pretrained(folder / "vq")
    new = VQModel.from_pretrained(folder / "tuned")
    frames = tune_vq_decoder.frames_tensor(make_clips(2, 12345)[0])
    assert torch.equal(new.encode(frames), old.encode(frames))
    assert torch.equal(new.codebook(), old.codebook())
    assert any(not torch.equal(a, b) for a, b in zip(new.decoder.parameters(), old.decoder.parameters()))
    out = capsys.readouterr().out
    assert "before: val PSNR" in out and "after: val PSNR" in out and "through the VQ" in out


def test_out_may_not_overwrite_the_starting_vq(folder, capsys):
    with pytest.raises(SystemExit) as err:
        tune_vq_decoder.main(["--vq", str(folder / "vq"), "--out", str(folder / "vq"), "--minutes", "1"])
    assert err.value.code == 2
    assert "--out must differ from --vq" in capsys.readouterr().err
