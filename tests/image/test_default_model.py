"""The shipped default model: it loads offline, is the architecture its card names, generates with the main
job's settings, and speculative decoding on its real weights is token-identical to AR under greedy decoding."""

from __future__ import annotations

import pytest
import torch

from mmaccel.image.defaults import DEFAULTS
from mmaccel.image.llamagen_c2i import LlamaGenC2IFamily
from mmaccel.image.pipeline import DEFAULT_WEIGHTS, ImageARPipeline


@pytest.fixture(scope="module")
def pipe():
    return ImageARPipeline.from_pretrained()


def test_shipped_files_and_architecture(pipe):
    for name in ("gpt.safetensors", "vq.safetensors", "draft.safetensors", "classifier.safetensors", "README.md"):
        assert (DEFAULT_WEIGHTS / name).is_file(), name
    total = sum(f.stat().st_size for f in DEFAULT_WEIGHTS.iterdir() if f.suffix == ".safetensors")
    assert total <= 50e6
    assert isinstance(pipe.family, LlamaGenC2IFamily)
    assert pipe.grid == (16, 16) and pipe.model.vocab_size >= 1024 and pipe.num_classes >= 10
    assert pipe.draft is not None and pipe.draft.vocab_size == pipe.model.vocab_size


def test_main_job_settings_generate_an_image_with_fewer_forwards(pipe):
    out = pipe([3], method="gsd", seed=0, progress=False, **DEFAULTS)
    assert out.images[0].size == (64, 64)
    assert out.stats[0]["steps"] < out.stats[0]["ar_steps"] == 256


@pytest.mark.parametrize("method", ["sjd", "gsd", "lantern-draft", "draft"])
def test_greedy_speculation_on_the_real_weights_is_lossless(pipe, method):
    kwargs = dict(guidance_scale=DEFAULTS["guidance_scale"], temperature=0, progress=False)
    ar = pipe([1, 8], method="ar", **kwargs)
    fast = pipe([1, 8], method=method, **kwargs)
    assert torch.equal(ar.tokens, fast.tokens)
    assert all(s["steps"] < 256 for s in fast.stats)
