"""Dense auxiliary supervision of the testbeds: the labels say what the pixels show, and the heads read the layers
they claim to, and leave the model they were attached to as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmaccel.data.scenes import COLOURS, Scene, Shape, owner_map, render
from mmaccel.prune.testbed import auxiliary as A
from mmaccel.prune.testbed import questions as Q
from mmaccel.prune.testbed import video_questions as V
from mmaccel.prune.testbed.train import build_model, example_with_every_question, make_batch


def _shape(kind: str, colour: str, center: tuple[float, float], size: float) -> Shape:
    return Shape(kind, colour, COLOURS[colour], center, size)


def test_owner_map_matches_what_render_draws_later_shapes_on_top():
    scene = Scene(
        background=(30, 30, 30),
        shapes=[_shape("square", "red", (0.4, 0.5), 0.5), _shape("circle", "blue", (0.6, 0.5), 0.4)],
    )
    owner, image = owner_map(scene, 64), render(scene, 64).astype(int)
    assert set(np.unique(owner)) == {-1, 0, 1}
    for index, shape in enumerate(scene.shapes):
        inside = owner == index
        exact = (np.abs(image[inside] - np.array(shape.rgb)).max(-1) <= 1).mean()
        assert exact > 0.85  # all but the anti-aliased rim
    assert (np.abs(image[owner == -1] - 30).max(-1) <= 1).mean() > 0.85
    # The circle is drawn second: where both cover a pixel, the circle owns it.
    alone = owner_map(Scene(background=(30, 30, 30), shapes=scene.shapes[:1]), 64)
    assert ((alone == 0) & (owner == 1)).sum() > 100


def test_cell_owner_takes_the_largest_share_and_needs_the_minimum():
    owner = np.full((4, 4), -1)
    owner[:2, :2] = 0  # cell (0, 0): all shape 0
    owner[0, 2:] = 1  # cell (0, 1): half shape 1
    owner[2, 2] = 2  # cell (1, 1): a quarter shape 2
    cells = A.cell_owner(owner, 2, min_share=0.5)
    assert cells.tolist() == [[0, 1], [-1, -1]]
    assert A.cell_owner(owner, 2, min_share=0.25).tolist() == [[0, 1], [-1, 2]]
    assert A.cell_owner(np.full((4, 4), -1), 2, 0.5).tolist() == [[-1, -1], [-1, -1]]


def test_image_patch_targets_name_the_shape_whose_colour_fills_the_patch():
    rng = np.random.default_rng(0)
    cell = Q.PATCH_SIZE
    checked = 0
    for _ in range(20):
        scene = Q.make_scene(rng)
        image = render(scene, Q.IMAGE_SIZE)
        kind, colour, centres = A.shape_targets(scene, Q.IMAGE_SIZE, cell, Q.SHAPE_KINDS, Q.SHAPE_COLOURS)
        side = Q.IMAGE_SIZE // cell
        patches = image.reshape(side, cell, side, cell, 3).transpose(0, 2, 1, 3, 4).reshape(side * side, -1, 3)
        for p in range(side * side):
            if kind[p] == 0:
                assert colour[p] == 0 and np.isnan(centres[p]).all()
                continue
            shape = next(s for s in scene.shapes if s.kind == Q.SHAPE_KINDS[kind[p] - 1])
            assert Q.SHAPE_COLOURS[colour[p] - 1] == shape.colour
            assert np.allclose(centres[p], shape.center)
            # Each pixel goes to the nearest of the scene's colours. The named shape owns at least half of the
            # patch's pixel centres, and render anti-aliases the rim: its colour shows in a quarter of the pixels or
            # more, and no other shape's in more than half.
            palette = sorted({scene.background, *(s.rgb for s in scene.shapes)})
            distance = patches[p][:, None].astype(float) - np.array(palette, dtype=float)
            share = np.bincount(np.linalg.norm(distance, axis=-1).argmin(-1), minlength=len(palette)) / cell**2
            assert share[palette.index(shape.rgb)] >= 0.25
            others = [palette.index(s.rgb) for s in scene.shapes if s.rgb != shape.rgb]
            assert all(share[i] <= 0.5 for i in others)
            checked += 1
    assert checked > 100


def test_video_motion_labels_follow_the_mover_and_the_newcomer():
    rng = np.random.default_rng(1)
    heads = A.VideoAuxiliary.__new__(A.VideoAuxiliary)  # only the labelling: no model needed
    heads.image_size, heads.patch_size = V.IMAGE_SIZE, V.PATCH_SIZE
    side = V.IMAGE_SIZE // (2 * V.PATCH_SIZE)  # OneVision pools the patch grid 2x2
    cell = V.IMAGE_SIZE // side
    for _ in range(10):
        clip = V.make_clip(rng)
        labels = heads._motion_labels(clip).reshape(clip.frames, side * side)
        frames = clip.render()
        direction = A.MOTIONS.index(clip.direction)
        centres = []
        shapes = [clip.mover, clip.newcomer, *clip.still]  # colours are distinct within a clip
        for f in range(clip.frames):
            drawn = np.stack([(frames[f] == np.asarray(s.rgb, np.uint8)).all(-1) for s in shapes])
            share = drawn.reshape(len(shapes), side, cell, side, cell).mean(axis=(2, 4)).reshape(len(shapes), -1)
            # Tokens the mover fills clearly more of than any other shape (render's anti-aliased rims blur near-ties)
            # are labelled with its direction, except in the first frame, where nothing earlier shows it moving; no
            # token it does not show up in is.
            mover = (share[0] >= 0.1) & (share[0] >= np.delete(share, 0, axis=0).max(0) + 0.05)
            assert (labels[f][mover] == (A.IGNORE if f == 0 else direction)).all()
            assert (share[0][labels[f] == direction] > 0).all()
            if f > 0:
                cells = np.nonzero(labels[f] == direction)[0]
                assert len(cells) > 0  # the mover shows in every frame
                centres.append(np.array([np.mod(cells, side).mean(), (cells // side).mean()]))
            assert (labels[f] == A.MOTIONS.index("new")).any() == (f >= clip.arrival)
        assert (labels[0] != direction).all()
        # Over the clip, the labelled tokens drift the stated way.
        assert (centres[-1] - centres[0]) @ np.array(V.STEPS[clip.direction]) > 0


def _hooks(model: torch.nn.Module) -> dict[str, list]:
    return {name: list(m._forward_hooks.values()) for name, m in model.named_modules()}


def _grads(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_image_heads_train_the_vision_tower_only_and_leave_the_model_as_it_was():
    torch.manual_seed(0)
    processor = Q.build_processor()
    model = build_model(processor)
    keys = set(model.state_dict())
    rng = np.random.default_rng(2)
    examples = [example_with_every_question(rng) for _ in range(2)]
    batch = make_batch(processor, examples)
    model(**batch)
    hooks = _hooks(model)  # transformers adds its own on a first forward
    heads = A.ImageAuxiliary(model, Q.SHAPE_KINDS, Q.SHAPE_COLOURS, Q.IMAGE_SIZE, Q.PATCH_SIZE)
    model(**batch)
    loss = heads.loss(examples, batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert _grads(model.model.vision_tower) and _grads(heads)
    assert not _grads(model.model.language_model) and not _grads(model.model.multi_modal_projector)
    heads.remove()
    assert set(model.state_dict()) == keys
    assert _hooks(model) == hooks


@pytest.mark.parametrize("layer", [0, 2])
def test_video_motion_head_reads_the_language_layer_it_names(layer):
    from mmaccel.prune.testbed.train_video import build_model as build_video_model
    from mmaccel.prune.testbed.train_video import training_example

    torch.manual_seed(0)
    processor = V.build_processor()
    model = build_video_model(processor)
    rng = np.random.default_rng(3)
    examples = [training_example(rng) for _ in range(2)]
    batch = make_batch(processor, examples)
    model(**batch)
    hooks = _hooks(model)
    heads = A.VideoAuxiliary(
        model, Q.SHAPE_COLOURS, V.IMAGE_SIZE, V.PATCH_SIZE, processor.video_token_id, motion_layer=layer
    )
    model(**batch)
    loss = heads.loss(examples, batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    layers = model.model.language_model.layers
    assert _grads(model.model.vision_tower) and _grads(layers[layer])
    assert not any(_grads(later) for later in layers[layer + 1 :])
    heads.remove()
    assert _hooks(model) == hooks
