"""EAGLE on image models: the pipeline finds the head beside the GPT, greedy EAGLE under guidance equals AR on the
tiny config, and the shipped head fits the default GPT."""

from __future__ import annotations

import shutil

import pytest
import torch

from mmaccel.drafting import EagleHead, load_eagle, save_eagle
from mmaccel.image.pipeline import DEFAULT_WEIGHTS, ImageARPipeline
from mmaccel.image.training.distill_eagle import eagle_config_for


@pytest.fixture(scope="module")
def eagle_dir(model_dir, tmp_path_factory):
    """The tiny image model's folder with a random EAGLE head beside its GPT."""
    folder = tmp_path_factory.mktemp("tiny_eagle") / "model"
    shutil.copytree(model_dir, folder)
    gpt = ImageARPipeline.from_pretrained(folder).model.gpt
    torch.manual_seed(0)
    head = EagleHead(eagle_config_for(gpt))
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.3)
    save_eagle(head, folder)
    return folder


@pytest.mark.parametrize("guidance_scale", [1.0, 2.0])
def test_greedy_eagle_equals_ar_on_the_tiny_image_model(eagle_dir, guidance_scale):
    pipe = ImageARPipeline.from_pretrained(eagle_dir)
    assert pipe.eagle is not None
    common = dict(class_labels=[0, 1, 2], temperature=0, guidance_scale=guidance_scale, progress=False)
    ar = pipe(method="ar", **common)
    for method in ("eagle", "lantern-eagle"):
        out = pipe(method=method, window=3, **common)
        assert torch.equal(out.tokens, ar.tokens), method
    for method, shape in (
        ("eagle-tree", {}),
        ("eagle-dynamic", {"tree": "3x3x3", "budget": 8}),
        ("lantern++-eagle", {}),
    ):
        out = pipe(method=method, **shape, **common)  # guided trees: the uncond rows follow each sample's tree
        assert torch.equal(out.tokens, ar.tokens), method


def test_a_folder_without_a_head_refuses_the_eagle_method(model_dir):
    pipe = ImageARPipeline.from_pretrained(model_dir)
    assert pipe.eagle is None
    with pytest.raises(ValueError, match="EAGLE head weights"):
        pipe(class_labels=[0], method="eagle", progress=False)


def test_the_shipped_head_fits_the_default_gpt():
    gpt = ImageARPipeline.from_pretrained().model.gpt
    head = load_eagle(DEFAULT_WEIGHTS / "eagle.safetensors")
    assert head.config == eagle_config_for(gpt)
    assert head.config.hidden_size == gpt.config.dim and head.config.vocab_size == gpt.config.vocab_size
    assert ImageARPipeline.from_pretrained().eagle is not None  # the default pipeline finds and binds it
