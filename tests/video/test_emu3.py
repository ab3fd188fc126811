"""Emu3 video on a tiny random Emu3ForConditionalGeneration folder: the frames-with-separators layout, greedy
speculative methods token-identical to AR at batch 2 with prompts of different lengths (guided), decoding through
Emu3VQVAE, and clear errors for wrong folders."""

import json
import shutil

import pytest
import torch

from mmaccel.sampling import SamplingConfig
from mmaccel.video.emu3 import Emu3Video, Emu3VideoLayout
from mmaccel.video.testing.emu3 import SPECIAL

PROMPTS = ["a red ball rolls left", "a cube"]


@pytest.fixture(scope="module")
def emu(emu3_dir):
    return Emu3Video.from_pretrained(emu3_dir, frames=3, height=2, width=3)


def test_layout_places_separators():
    lay = Emu3VideoLayout(2, 2, 3, n_codes=16)
    assert lay.frame_tokens == 9 and lay.num_tokens == 18
    assert lay.forced(torch.arange(18)).tolist() == [-1, -1, -1, 16, -1, -1, -1, 16, 17] * 2
    tokens = torch.arange(18)[None] % 16
    assert lay.grids(tokens)[0, 1].tolist() == [[9, 10, 11], [13, 14, 15]]


def test_prompt_ends_with_the_image_prefix(emu):
    ids = emu.prompt(["a cube"]).ids[0].tolist()
    assert emu.tokenizer.convert_ids_to_tokens(ids) == [
        SPECIAL["bos_token"], "a", "cube", SPECIAL["boi_token"], "2", "*", "3", SPECIAL["image_wrapper_token"],
    ]  # fmt: skip


@pytest.mark.parametrize(
    "method", ["sjd:init=temporal-repeat", "mc-sjd:init=temporal-repeat:window=12", "mc-sjd:init=vertical"]
)
def test_greedy_identical_to_ar(emu, method):
    greedy = SamplingConfig(0.0)
    ar = emu.generate(PROMPTS, "ar", sampling=greedy, guidance_scale=2.0)
    out = emu.generate(PROMPTS, method, sampling=greedy, guidance_scale=2.0)
    assert torch.equal(out, ar)
    forced = emu.layout.forced(torch.arange(emu.layout.num_tokens)).expand_as(ar)
    assert bool((ar[forced >= 0] == forced[forced >= 0]).all()) and bool((ar[forced < 0] < 16).all())


def test_sampled_clip_decodes_to_video(emu):
    tokens = emu.generate(PROMPTS, "mc-sjd:init=temporal-repeat", seed=3)
    video = emu.decode(tokens)
    assert video.dtype == torch.uint8 and video.shape == (2, 6, 3, 4, 6)  # 3 latent frames x temporal factor 2


def test_wrong_folders_are_named(emu3_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        Emu3Video.from_pretrained(tmp_path / "nope", 1, 2, 2)
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type is 'llama', not 'emu3'"):
        Emu3Video.from_pretrained(other, 1, 2, 2)
    broken = tmp_path / "broken"
    shutil.copytree(emu3_dir, broken)
    (broken / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json"):
        Emu3Video.from_pretrained(broken, 1, 2, 2)
