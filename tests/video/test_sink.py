"""A video GPT trained with a sink token (``train_gpt --sink``): its prompts carry the sink before the class (and the
unconditional one before the null class), lossless methods stay greedy token-identical to AR, and a config whose sink
id is not the one after the null class is refused."""

import json

import pytest
import torch

from mmaccel.checkpoint import CheckpointError
from mmaccel.sampling import SamplingConfig
from mmaccel.video.model import load_video_gpt
from mmaccel.video.pipeline import VideoARPipeline
from mmaccel.video.testing import save_tiny_video_model


@pytest.fixture(scope="module")
def sink_dir(tmp_path_factory):
    return save_tiny_video_model(tmp_path_factory.mktemp("tiny_sink"), frames=2, grid=4, num_classes=3, sink=True)


def test_prompts_carry_the_sink(sink_dir):
    model = load_video_gpt(sink_dir)
    k, sink = model.codebook_size, model.sink
    assert sink == k + 3 + 1
    prompt = model.class_prompt(torch.tensor([0, 2]))
    assert prompt.ids.tolist() == [[sink, k], [sink, k + 2]] and prompt.lengths.tolist() == [2, 2]
    assert model.unconditional_prompt(prompt).ids.tolist() == [[sink, k + 3]] * 2


@pytest.mark.parametrize("method, params", [("mc-sjd", {"init": "temporal-repeat"}), ("sjd", {"window": 4})])
def test_greedy_identical_to_ar(sink_dir, method, params):
    pipe = VideoARPipeline.from_pretrained(sink_dir)
    prompt = pipe.model.class_prompt(torch.tensor([0, 1, 2]))
    greedy, n = SamplingConfig(0.0), pipe.layout.num_tokens
    ar = pipe.build_decoder("ar", greedy, 2.0).generate(prompt, n, seeds=[0, 1, 2])
    out = pipe.build_decoder(method, greedy, 2.0, **params).generate(prompt, n, seeds=[0, 1, 2])
    assert torch.equal(out.tokens, ar.tokens)


def test_a_wrong_sink_id_is_refused(sink_dir, tmp_path):
    for name in ("gpt.safetensors", "vq.safetensors", "vq_config.json"):
        (tmp_path / name).write_bytes((sink_dir / name).read_bytes())
    meta = json.loads((sink_dir / "gpt_config.json").read_text())
    meta["sink_token"] += 1
    (tmp_path / "gpt_config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="sink_token"):
        load_video_gpt(tmp_path)
