"""Each kind of bad input gets an error that names the parameter."""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    llava_inputs,
    onevision_image_inputs,
    qwen_inputs,
    tiny_llava,
    tiny_onevision,
    tiny_qwen2vl,
    tiny_qwen25vl,
)
from transformers import LlamaConfig, LlamaForCausalLM

import mmaccel.prune as P


@pytest.fixture(scope="module")
def llava():
    return tiny_llava()


@pytest.mark.parametrize("keep", [0, 0.0, -0.1, 1.5, True, "half", None])
def test_keep_outside_zero_one(llava, keep):
    with pytest.raises(ValueError, match="keep"):
        with P.prune(llava, "fastv", keep=keep):
            pass


@pytest.mark.parametrize(
    "method,params,name",
    [
        ("fastv", {"layer": 4}, "layer"),
        ("fastv", {"layer": 40}, "layer"),
        ("fastv", {"layer": 0}, "layer"),
        ("dart", {"layer": 9}, "layer"),
    ],
)
def test_layer_beyond_the_model(llava, method, params, name):
    with pytest.raises(ValueError, match=rf"{name}=\d+ is outside .* 4-layer"):
        with P.prune(llava, method, keep=0.5, **params):
            pass


def test_layer_beyond_the_model_even_when_keeping_everything(llava):
    with pytest.raises(ValueError, match="layer=12"):
        with P.prune(llava, "fastv", keep=1.0, layer=12):
            pass


def test_holitom_inner_layer_beyond_the_model():
    with pytest.raises(ValueError, match="inner_layer=4"):
        with P.prune(tiny_onevision(), "holitom", keep=0.5, inner_layer=4):
            pass


def test_unsupported_model_names_the_supported_classes():
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    with pytest.raises(
        TypeError,
        match="model: LlamaForCausalLM .*LlavaForConditionalGeneration.*"
        "LlavaOnevisionForConditionalGeneration.*Qwen2VLForConditionalGeneration",
    ):
        with P.prune(LlamaForCausalLM(config), "fastv", keep=0.5):
            pass


def test_unknown_method_and_parameter(llava):
    with pytest.raises(ValueError, match="method='fast'"):
        with P.prune(llava, "fast", keep=0.5):
            pass
    with pytest.raises(TypeError, match="method='fastv'"):
        with P.prune(llava, "fastv", keep=0.5, K=2):
            pass


def test_video_method_on_a_model_without_video(llava):
    with pytest.raises(ValueError, match="method='holitom' prunes video tokens.*takes no video"):
        with P.prune(llava, "holitom", keep=0.5):
            pass


@pytest.mark.parametrize(
    "make,inputs",
    [
        (tiny_onevision, lambda: onevision_image_inputs(1)),
        (tiny_qwen2vl, lambda: qwen_inputs(1)),
    ],
)
def test_video_method_given_a_single_image(make, inputs):
    model = make()
    with P.prune(model, "holitom", keep=0.5):
        with pytest.raises(ValueError, match="needs video input"):
            model(**inputs())


@pytest.mark.parametrize("method,params", [("visionzip", {}), ("holitom", {"contextual_ratio": 0.5})])
def test_method_needing_vision_attention_it_cannot_get(method, params):
    with pytest.raises(ValueError, match=f"method='{method}' needs the vision encoder's attention"):
        with P.prune(tiny_qwen25vl(), method, keep=0.5, **params):
            pass


def test_attention_implementation_without_4d_masks(llava):
    llava.model.language_model.config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="attn_implementation"):
            with P.prune(llava, "fastv", keep=0.5):
                pass
    finally:
        llava.model.language_model.config._attn_implementation = "sdpa"


def test_method_parameters_are_checked():
    with pytest.raises(ValueError, match="contextual_ratio"):
        P.make_method("visionzip", 0.5, contextual_ratio=1.5)
    with pytest.raises(ValueError, match="pivot_image_tokens"):
        P.make_method("dart", 0.5, pivot_image_tokens=-1)
    with pytest.raises(ValueError, match="tau"):
        P.make_method("holitom", 0.5, tau=2.0)
    for method in ("divprune", "tome", "visionzip"):
        with pytest.raises(ValueError, match="proportional must be true or false"):
            P.make_method(method, 0.5, proportional="yes")


@pytest.mark.parametrize("method,params", [("fastv", {}), ("divprune", {"proportional": True})])
def test_eager_attention_also_works(method, params):
    model = tiny_llava()
    model.model.language_model.config._attn_implementation = "eager"
    inputs = llava_inputs(2, suffix_lengths=[4, 2])
    with P.prune(model, method, keep=0.25, **params) as session:
        eager = model(**inputs).logits[:, -1]
    model.model.language_model.config._attn_implementation = "sdpa"
    with P.prune(model, method, keep=0.25, **params) as session:
        sdpa = model(**inputs).logits[:, -1]
    assert session.last_prefill["visual_tokens_per_layer"][-1] == 32
    torch.testing.assert_close(eager, sdpa, rtol=1e-5, atol=1e-5)


def test_holitom_without_attention_based_selection_runs_on_qwen25vl():
    model = tiny_qwen25vl()
    with P.prune(model, "holitom", keep=0.5, contextual_ratio=1.0) as session:
        model(**qwen_inputs(1, video=True))
    assert session.last_prefill["visual_tokens_per_layer"][0] < 32
