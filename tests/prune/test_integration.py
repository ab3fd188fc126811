"""Pruning on tiny random configs of the real classes: identity, positions, batching, cache, restore."""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    IMAGE,
    VIDEO,
    llava_inputs,
    onevision_image_inputs,
    onevision_video_inputs,
    qwen_inputs,
    tiny_llava,
    tiny_onevision,
    tiny_qwen2vl,
    tiny_qwen25vl,
)

import mmaccel.prune as P
from mmaccel.prune.base import Choice, ModelInfo, PruneMethod, Stage

FAMILIES = {
    "llava": (tiny_llava, lambda batch=1, **kw: llava_inputs(batch, **kw)),
    "onevision": (tiny_onevision, lambda batch=1, **kw: onevision_image_inputs(batch)),
    "onevision_video": (tiny_onevision, lambda batch=1, **kw: onevision_video_inputs(batch)),
    "qwen2vl": (tiny_qwen2vl, lambda batch=1, **kw: qwen_inputs(batch, **kw)),
    "qwen2vl_video": (tiny_qwen2vl, lambda batch=1, **kw: qwen_inputs(batch, video=True, **kw)),
    "qwen25vl": (tiny_qwen25vl, lambda batch=1, **kw: qwen_inputs(batch, **kw)),
    "qwen25vl_video": (tiny_qwen25vl, lambda batch=1, **kw: qwen_inputs(batch, video=True, **kw)),
}
PADDED = ("llava", "qwen2vl", "qwen25vl")  # families whose test prompts can differ in length
GENERATE = dict(do_sample=False, output_logits=True, return_dict_in_generate=True, suppress_tokens=[IMAGE, VIDEO, 92])


class KeepAll(PruneMethod):
    """Keeps every visual token at ``layer``: runs the whole pruning path without changing the result."""

    name = "keep_all"

    def __init__(self, layer: int):
        super().__init__(1.0)
        self.layer = layer

    def bind(self, info: ModelInfo) -> None:
        self.stages = [Stage(layer=self.layer, select=lambda inp: Choice(keep=inp.visual))]


@pytest.fixture(scope="module")
def models():
    return {name: make() for name, (make, _) in FAMILIES.items() if not name.endswith("_video")}


def _model(models, family):
    return models[family.removesuffix("_video")]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("method", ["none", "fastv"])
def test_keep_one_or_none_is_bitwise_unpruned(models, family, method):
    model, inputs = _model(models, family), FAMILIES[family][1](2)
    reference = model(**inputs).logits
    with P.prune(model, method, keep=1.0) as session:
        assert session is None
        assert torch.equal(model(**inputs).logits, reference)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("layer", [0, 2])
def test_pruning_path_keeping_everything_matches_unpruned(models, family, layer):
    model, inputs = (
        _model(models, family),
        FAMILIES[family][1](2, suffix_lengths=[4, 2]) if family in ("llava", "qwen2vl") else FAMILIES[family][1](2),
    )
    reference = model(**inputs).logits[:, -1]
    with P.prune(model, KeepAll(layer)):
        logits = model(**inputs).logits[:, -1]
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


def _capture_layer_rope(model, layer_index):
    seen = []
    attention = model.model.language_model.layers[layer_index].self_attn  # sees what the layer passes on
    handle = attention.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["position_embeddings"][0].detach().clone()), with_kwargs=True
    )
    return seen, handle


@pytest.mark.parametrize(
    "family,method,params",
    [
        ("llava", "fastv", {}),
        ("qwen2vl", "fastv", {}),
        ("qwen2vl", "divprune", {}),
        ("qwen2vl_video", "tome", {}),
        ("onevision_video", "holitom", {}),
    ],
)
def test_kept_tokens_keep_their_original_positions(models, family, method, params):
    model, inputs = _model(models, family), FAMILIES[family][1](2)
    lm = model.model.language_model
    full, handle = (
        [],
        lm.register_forward_pre_hook(
            lambda m, a, kw: full.append((kw["inputs_embeds"], kw["position_ids"])), with_kwargs=True
        ),
    )
    last = len(lm.layers) - 1
    seen, handle_last = _capture_layer_rope(model, last)
    with P.prune(model, method, keep=0.25, **params) as session:
        model(**inputs)
        kept = session.kept_columns
    handle.remove()
    handle_last.remove()
    embeds, position_ids = full[0]
    if position_ids is None:  # the language model numbers the full prompt itself
        position_ids = torch.arange(embeds.shape[1]).unsqueeze(0)
    if position_ids.ndim == 3 and position_ids.shape[0] == 4:  # Qwen2-VL: text row + 3 M-RoPE rows
        position_ids = position_ids[1:]
    cos_full, _ = lm.rotary_emb(embeds, position_ids)
    expected = cos_full.expand(kept.shape[0], *cos_full.shape[1:]).gather(
        1, kept.clamp(min=0).unsqueeze(-1).expand(-1, -1, cos_full.shape[-1])
    )
    real = kept >= 0
    assert kept.shape[1] < embeds.shape[1]
    torch.testing.assert_close(seen[0][real], expected[real])


@pytest.mark.parametrize(
    "family,method,params",
    [
        ("llava", "fastv", {}),
        ("llava", "visionzip", {}),
        ("llava", "divprune", {}),
        ("llava", "divprune", {"proportional": True}),
        ("onevision", "tome", {}),
        ("qwen2vl", "dart", {}),
        ("qwen2vl", "tome", {}),
        ("qwen2vl", "tome", {"proportional": True}),
        ("onevision_video", "holitom", {}),
    ],
)
def test_batch_of_two_equals_each_alone(models, family, method, params):
    model = _model(models, family)
    make = FAMILIES[family][1]
    kwargs = {"suffix_lengths": [5, 2]} if family in PADDED else {}
    batch = make(2, **kwargs)
    with P.prune(model, method, keep=0.25, **params):
        together = model.generate(**batch, max_new_tokens=3, **GENERATE)
        for row in range(2):
            alone = _row(batch, row, family)
            single = model.generate(**alone, max_new_tokens=3, **GENERATE)
            width = alone["input_ids"].shape[1]
            assert torch.equal(single.sequences[0, -3:], together.sequences[row, -3:])
            assert single.sequences.shape[1] - 3 == width
            for a, b in zip(single.logits, together.logits):
                torch.testing.assert_close(a[0], b[row], rtol=1e-4, atol=1e-4)


def _row(batch: dict, row: int, family: str) -> dict:
    """One sample of a left-padded batch, with its padding removed."""
    keep = batch["attention_mask"][row].bool()
    out = {
        "input_ids": batch["input_ids"][row : row + 1, keep],
        "attention_mask": batch["attention_mask"][row : row + 1, keep],
    }
    if "mm_token_type_ids" in batch:
        out["mm_token_type_ids"] = batch["mm_token_type_ids"][row : row + 1, keep]
    for key in ("pixel_values", "pixel_values_videos", "image_sizes"):
        if key in batch and not family.startswith("qwen"):
            out[key] = batch[key][row : row + 1]
    if family.startswith("qwen"):
        for pixels, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
            if pixels in batch:
                per = int(batch[grid][0].prod())
                out[pixels] = batch[pixels][row * per : (row + 1) * per]
                out[grid] = batch[grid][row : row + 1]
    return out


@pytest.mark.parametrize(
    "family,method,params",
    [
        ("llava", "fastv", {}),
        ("llava", "dart", {}),
        ("llava", "visionzip", {}),
        ("llava", "divprune", {}),
        ("llava", "divprune", {"proportional": True}),
        ("llava", "tome", {}),
        ("llava", "tome", {"proportional": True}),
        ("onevision", "visionzip", {}),
        ("onevision", "visionzip", {"proportional": True}),
        ("onevision_video", "holitom", {}),
        ("qwen2vl", "fastv", {}),
        ("qwen2vl_video", "divprune", {}),
        ("qwen2vl_video", "divprune", {"proportional": True}),
    ],
)
def test_generation_with_cache_equals_without(models, family, method, params):
    model = _model(models, family)
    kwargs = {"suffix_lengths": [5, 2]} if family in PADDED else {}
    inputs = FAMILIES[family][1](2, **kwargs)
    with P.prune(model, method, keep=0.25, **params):
        cached = model.generate(**inputs, max_new_tokens=4, **GENERATE)
        uncached = model.generate(**inputs, max_new_tokens=4, use_cache=False, **GENERATE)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.logits, uncached.logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_pruning_changes_the_prefill_and_shortens_the_cache(models):
    model, inputs = models["llava"], llava_inputs(1)
    reference = model(**inputs).logits[:, -1]
    with P.prune(model, "fastv", keep=0.25, layer=2) as session:
        out = model(**inputs, use_cache=True)
        stats = session.last_prefill
    assert not torch.allclose(out.logits[:, -1], reference)
    lengths = [out.cache.get_seq_length(i) for i in range(4)]
    assert lengths[0] == lengths[1] == inputs["input_ids"].shape[1]
    assert lengths[2] == lengths[3] == inputs["input_ids"].shape[1] - 64 + 16
    assert stats["visual_tokens_per_layer"] == [64, 64, 16, 16]


@pytest.mark.parametrize("family,method", [("llava", "visionzip"), ("onevision_video", "holitom"), ("qwen2vl", "dart")])
def test_model_is_unchanged_after_the_context(models, family, method):
    model, inputs = _model(models, family), FAMILIES[family][1](1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    reference = model(**inputs).logits
    hooks_before = _hook_count(model)
    with P.prune(model, method, keep=0.25):
        assert _hook_count(model) > hooks_before
        model.generate(**inputs, max_new_tokens=2, **GENERATE)
    assert _hook_count(model) == hooks_before
    assert "get_image_features" not in model.model.__dict__
    assert "get_video_features" not in model.model.__dict__
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(**inputs).logits, reference)


def test_other_instances_are_not_affected(models):
    model, other = models["llava"], tiny_llava(seed=0)
    inputs = llava_inputs(1)
    reference = other(**inputs).logits
    hooks = _hook_count(other)  # transformers adds its own output-capturing hooks on first use
    with P.prune(model, "fastv", keep=0.25):
        assert torch.equal(other(**inputs).logits, reference)
        assert _hook_count(other) == hooks


def _hook_count(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def test_text_only_calls_inside_the_context_are_untouched(models):
    model = models["llava"]
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    reference = model(input_ids=ids).logits
    with P.prune(model, "fastv", keep=0.25):
        assert torch.equal(model(input_ids=ids).logits, reference)


@pytest.mark.parametrize("family,method", [("llava", "divprune"), ("qwen2vl", "tome"), ("qwen2vl", "fastv")])
def test_manual_decoding_without_position_ids_matches_generate(models, family, method):
    model, inputs = _model(models, family), FAMILIES[family][1](1)
    with P.prune(model, method, keep=0.25):
        generated = model.generate(**inputs, max_new_tokens=3, **GENERATE)
        out = model(**inputs, use_cache=True)
        cache, ids, mask = out.cache, inputs["input_ids"], inputs["attention_mask"]
        logits = [out.logits[:, -1]]
        for step in range(2):
            token = generated.sequences[:, ids.shape[1] + step : ids.shape[1] + step + 1]
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            extra = {"mm_token_type_ids": torch.zeros_like(token)} if family.startswith("qwen") else {}
            out = model(input_ids=token, attention_mask=mask, cache=cache, use_cache=True, **extra)
            cache = out.cache
            logits.append(out.logits[:, -1])
    for a, b in zip(logits, generated.logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_package_itself_is_callable(models):
    model, inputs = models["llava"], llava_inputs(1)
    with P(model, "fastv", keep=0.25) as session:
        model(**inputs)
    assert session.last_prefill["visual_tokens_per_layer"][-1] == 16


def _capture_masks(model, layer_index):
    seen = []
    attention = model.model.language_model.layers[layer_index].self_attn
    handle = attention.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["attention_mask"].detach().clone()), with_kwargs=True
    )
    return seen, handle


def test_proportional_divprune_weighs_each_kept_token_by_the_tokens_nearest_to_it(models):
    model, inputs = models["llava"], llava_inputs(2, suffix_lengths=[5, 2])
    lm = model.model.language_model
    embeds = []
    handle = lm.register_forward_pre_hook(lambda m, a, kw: embeds.append(kw["inputs_embeds"]), with_kwargs=True)
    masks, handle_mask = _capture_masks(model, 3)
    with P.prune(model, "divprune", keep=0.25, proportional=True) as session:
        model(**inputs)
        kept = session.kept_columns
    handle.remove()
    handle_mask.remove()
    mask = masks[0][:, 0]
    ids = inputs["input_ids"]
    for b in range(2):
        visual = (ids[b] == IMAGE).nonzero().flatten()
        slots = (kept[b] >= 0).nonzero().flatten()
        columns = kept[b, slots]
        is_visual = ids[b, columns] == IMAGE
        kept_visual = columns[is_visual]
        assert len(kept_visual) == 16
        # Expected sizes, from the LLM's input embeddings: 1 + the dropped visual tokens nearest to each.
        normed = torch.nn.functional.normalize(embeds[0][b], dim=-1)
        dropped = visual[~torch.isin(visual, kept_visual)]
        nearest = (normed[dropped] @ normed[kept_visual].T).argmax(-1)
        size = 1 + torch.bincount(nearest, minlength=len(kept_visual)).float()
        last = mask[b, -1, slots]  # the last query sees every real token of its row
        torch.testing.assert_close(last[is_visual].exp(), size)
        assert torch.equal(last[~is_visual], torch.zeros(int((~is_visual).sum())))
        assert size.sum() == len(visual)


class AbsorbTwice(PruneMethod):
    """Stage 0 folds visual token 1 into 0; stage 2 folds 0 (now of size 2) into 2, and drops 3 outright."""

    name = "absorb_twice"

    def __init__(self):
        super().__init__(0.5)

    def bind(self, info: ModelInfo) -> None:
        def first(inp):
            v = inp.visual
            return Choice(keep=torch.cat([v[:1], v[2:]]), absorbed=v[1:2], absorber=v[:1])

        def second(inp):
            v = inp.visual  # visual tokens 0, 2, 3, ... of the original
            return Choice(keep=torch.cat([v[1:2], v[3:]]), absorbed=v[:1], absorber=v[1:2])

        self.stages = [Stage(layer=0, select=first), Stage(layer=2, select=second)]


def test_proportional_sizes_compose_across_stages_and_persist_while_decoding(models):
    model, inputs = models["llava"], llava_inputs(1)
    first_visual = int((inputs["input_ids"][0] == IMAGE).nonzero()[0])
    early, handle_early = _capture_masks(model, 1)
    late, handle_late = _capture_masks(model, 3)
    with P.prune(model, AbsorbTwice()) as session:
        model.generate(**inputs, max_new_tokens=2, **GENERATE)
        kept = session.kept_columns[0]
    handle_early.remove()
    handle_late.remove()
    sizes = {"early": early[0][0, 0, -1].exp(), "late": late[0][0, 0, -1].exp()}
    # After stage 0: token 0 stands for 2; after stage 2 token 2 stands for 3 (itself, 0 and 1); 3 is gone.
    assert sizes["early"][0 + first_visual - 0] == pytest.approx(2.0)
    late_columns = kept.tolist()
    assert first_visual + 3 not in late_columns and first_visual not in late_columns
    assert sizes["late"][late_columns.index(first_visual + 2)] == pytest.approx(3.0)
    assert sorted(set(sizes["late"].tolist())) == pytest.approx([1.0, 3.0])
    # A decode step (one query) keeps the prompt's sizes and gives the new token size 1.
    step = late[1][0, 0, -1].exp()
    torch.testing.assert_close(step[: len(late_columns)], sizes["late"])
    assert step[-1] == 1.0


def test_no_proportional_attention_leaves_the_boolean_mask(models):
    model, inputs = models["llava"], llava_inputs(1)
    masks, handle = _capture_masks(model, 3)
    with P.prune(model, "divprune", keep=0.25):
        model(**inputs)
    handle.remove()
    assert masks[0].dtype == torch.bool
