"""Lossless methods with the temporal inits are greedy token-identical to plain AR, at batch 3 with different
prompt lengths (a class token, or a class token and the start of the first frame), with and without guidance."""

import pytest
import torch

from mmaccel.models import TokenPrompt
from mmaccel.sampling import SamplingConfig
from mmaccel.video.pipeline import VideoARPipeline


@pytest.fixture(scope="module")
def pipe(model_dir):
    return VideoARPipeline.from_pretrained(model_dir)


def _prompt(pipe):
    k = pipe.model.codebook_size
    rows = [[k + 0], [k + 1, 3, 7, 7], [k + 2, 5]]
    return TokenPrompt.from_lists(rows, pad_id=k)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
@pytest.mark.parametrize(
    "method, params",
    [
        ("sjd", {"init": "temporal-repeat"}),
        ("sjd", {"init": "temporal-sample", "window": 4}),
        ("mc-sjd", {"init": "temporal-repeat"}),
        ("mc-sjd", {"init": "temporal-sample"}),
        ("greedy", {"init": "temporal-repeat"}),
    ],
)
def test_greedy_identical_to_ar(pipe, method, params, guidance):
    _check_identical(pipe, method, params, guidance)


# First-frame spatial inits and window schedules: guided only (the unguided path is the same code).
@pytest.mark.parametrize(
    "method, params",
    [
        ("mc-sjd", {"init": "temporal-repeat+horizontal-sample"}),
        ("sjd", {"init": "vertical"}),
        ("mc-sjd", {"init": "temporal-repeat", "schedule": "frame"}),
        ("sjd", {"init": "temporal-sample", "schedule": "row", "window": 6}),
        ("mc-sjd", {"init": "temporal-repeat", "schedule": "diagonal"}),
    ],
)
def test_inits_and_schedules_greedy_identical_to_ar(pipe, method, params):
    _check_identical(pipe, method, params, 2.0)


def _check_identical(pipe, method, params, guidance):
    greedy = SamplingConfig(0.0)
    n = pipe.layout.num_tokens - 4
    ar = pipe.build_decoder("ar", greedy, guidance).generate(_prompt(pipe), n, seeds=[0, 1, 2])
    out = pipe.build_decoder(method, greedy, guidance, **params).generate(_prompt(pipe), n, seeds=[0, 1, 2])
    assert torch.equal(out.tokens, ar.tokens)
    assert int(out.stats.steps_per_sample.max()) <= n


def test_pipeline_same_clip_alone_or_in_batch(pipe):
    both = pipe([0, 1], method="mc-sjd", init="temporal-repeat", seed=5, progress=False)
    alone = pipe(1, method="mc-sjd", init="temporal-repeat", seed=6, progress=False)
    assert torch.equal(both.tokens[1], alone.tokens[0])
    assert both.frames[0].shape == (2, 8, 8, 3) and both.acceptance_maps.shape == (2, 2, 4, 4)
    s = both.stats[0]
    assert s["tokens"] == 32 and 1 <= s["steps"] <= 32 and len(s["frame_steps"]) == 2
