"""The cell-slot video GPT (the core's ``SlotLlama`` over the frame grid): it saves and loads as itself, a checkpoint
whose slot layout is not its frame's is refused, ``train_gpt --cell-slots`` adds the table to a plain GPT, and the
lossless methods stay token-identical to AR on it (windows get their cells from the positions the engine gives)."""

import json

import pytest
import torch

from mmaccel.checkpoint import CheckpointError
from mmaccel.models import TokenPrompt
from mmaccel.models.slot_llama import SlotLlama
from mmaccel.sampling import SamplingConfig
from mmaccel.video.data import NUM_CLASSES
from mmaccel.video.model import load_video_gpt
from mmaccel.video.pipeline import VideoARPipeline
from mmaccel.video.testing import save_tiny_video_model
from mmaccel.video.training import train_gpt


@pytest.fixture(scope="module")
def slot_dir(tmp_path_factory):
    return save_tiny_video_model(tmp_path_factory.mktemp("cells"), frames=2, grid=4, sink=True, cell_slots=True)


def test_the_cell_slot_gpt_saves_and_loads_as_itself(slot_dir):
    gpt = load_video_gpt(slot_dir)
    assert isinstance(gpt.model, SlotLlama)
    assert (gpt.model.slot_period, gpt.model.slot_offset) == (16, 2)  # a 4x4 frame after sink and class
    assert float(gpt.model.slots.weight.detach().abs().sum()) > 0


def test_a_slot_layout_other_than_the_frames_is_refused(slot_dir, tmp_path):
    for name in ("gpt.safetensors", "vq.safetensors", "vq_config.json"):
        (tmp_path / name).write_bytes((slot_dir / name).read_bytes())
    meta = json.loads((slot_dir / "gpt_config.json").read_text())
    meta["llama"]["slot_period"] = 9
    (tmp_path / "gpt_config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="slots of period 9 from position 2, not the 4x4 frame grid"):
        load_video_gpt(tmp_path)


@pytest.mark.parametrize(
    "method, params",
    [
        ("sjd", {"init": "temporal-repeat"}),
        ("mc-sjd", {"init": "temporal-sample"}),
        ("mc-sjd", {"init": "temporal-repeat", "schedule": "frame"}),
    ],
)
def test_lossless_methods_match_ar_greedily_on_the_cell_slot_gpt(slot_dir, method, params):
    pipe = VideoARPipeline.from_pretrained(slot_dir)
    k = pipe.model.codebook_size
    prompt = TokenPrompt.from_lists([[k + 0], [k + 1, 3, 7, 7], [k + 2, 5]], pad_id=k)
    greedy, n = SamplingConfig(0.0), pipe.layout.num_tokens - 4
    ar = pipe.build_decoder("ar", greedy, 2.0).generate(prompt, n, seeds=[0, 1, 2])
    out = pipe.build_decoder(method, greedy, 2.0, **params).generate(prompt, n, seeds=[0, 1, 2])
    assert torch.equal(out.tokens, ar.tokens)


def test_train_gpt_adds_cell_slots_to_a_plain_gpt(tmp_path):
    folder = save_tiny_video_model(tmp_path / "old", frames=2, grid=8, num_classes=NUM_CLASSES, sink=True)
    vq = tmp_path / "old"  # train_gpt reads the VQ to copy from --vq; the tiny one has 2x downsampling
    train_gpt.main(
        [
            "--init",
            str(folder),
            "--vq",
            str(vq),
            "--out",
            str(tmp_path / "new"),
            "--clips",
            "4",
            "--frames",
            "2",
            "--resolution",
            "16",
            "--batch",
            "2",
            "--minutes",
            "0.05",
            "--cell-slots",
        ]
    )
    gpt = load_video_gpt(tmp_path / "new")
    assert isinstance(gpt.model, SlotLlama) and gpt.model.slot_period == 64
    assert float(gpt.model.slots.weight.detach().abs().sum()) > 0  # trained away from its zero start
