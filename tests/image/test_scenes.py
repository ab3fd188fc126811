import numpy as np
import pytest

from mmaccel.data.scenes import (
    CLASS_NAMES,
    COLOURS,
    NUM_CLASSES,
    Scene,
    Shape,
    make_dataset,
    random_scene,
    render,
    sample_class_image,
)


def test_dataset_is_deterministic_from_seed():
    a_img, a_lab = make_dataset(40, seed=7, size=32)
    b_img, b_lab = make_dataset(40, seed=7, size=32)
    c_img, _ = make_dataset(40, seed=8, size=32)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert a_img.dtype == np.uint8 and a_img.shape == (40, 32, 32, 3)
    assert a_lab.dtype == np.int64


def test_classes_are_balanced():
    _, labels = make_dataset(NUM_CLASSES * 5 + 3, seed=0, size=16)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    assert counts.max() - counts.min() <= 1
    assert NUM_CLASSES >= 10 and len(CLASS_NAMES) == NUM_CLASSES


@pytest.mark.parametrize("label", [-1, NUM_CLASSES, 2.5])
def test_label_out_of_range(label):
    with pytest.raises(ValueError, match="label"):
        sample_class_image(label, np.random.default_rng(0))


def test_images_differ_across_classes():
    # Same random stream, different class: the drawn shape must differ.
    images = [sample_class_image(c, np.random.default_rng(3), size=32) for c in range(NUM_CLASSES)]
    for i in range(NUM_CLASSES):
        for j in range(i + 1, NUM_CLASSES):
            assert np.abs(images[i].astype(int) - images[j].astype(int)).sum() > 0, (i, j)


def test_class_masks_are_distinct_at_64px():
    # Upright, centred, same size: silhouettes of any two classes disagree on a visible share of pixels.
    masks = []
    for kind in CLASS_NAMES:
        scene = Scene(background=(0, 0, 0), shapes=[Shape(kind, "white", (255, 255, 255), (0.5, 0.5), 0.5)])
        masks.append(render(scene, 64)[..., 0] > 127)
    for i in range(NUM_CLASSES):
        assert masks[i].sum() > 100, CLASS_NAMES[i]
        for j in range(i + 1, NUM_CLASSES):
            assert (masks[i] != masks[j]).sum() > 60, (CLASS_NAMES[i], CLASS_NAMES[j])


def test_render_places_shape_where_asked():
    red = COLOURS["red"]
    scene = Scene(background=(0, 0, 255), shapes=[Shape("square", "red", red, (0.25, 0.75), 0.3)])
    img = render(scene, 64)
    assert tuple(img[48, 16]) == red  # centre of the square: x=0.25 -> column 16, y=0.75 -> row 48
    assert tuple(img[10, 50]) == (0, 0, 255)
    circle = Scene(background=(0, 0, 0), shapes=[Shape("circle", "white", (255, 255, 255), (0.5, 0.5), 0.6)])
    grey = render(circle, 64)[..., 0]
    assert ((grey > 0) & (grey < 255)).sum() > 20  # supersampling leaves partial-coverage edge pixels


def test_random_scene_no_overlap_and_distinct_kinds():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scene = random_scene(rng, n_shapes=(2, 4), distinct_kinds=True)
        kinds = [s.kind for s in scene.shapes]
        assert len(set(kinds)) == len(kinds)
        for a in scene.shapes:
            x0, y0, x1, y1 = a.bbox
            assert -1e-9 <= x0 and x1 <= 1 + 1e-9 and -1e-9 <= y0 and y1 <= 1 + 1e-9
            for b in scene.shapes:
                if a is not b:
                    d = np.hypot(a.center[0] - b.center[0], a.center[1] - b.center[1])
                    assert d > (a.size + b.size) / 2


def test_bad_shape_fields():
    with pytest.raises(ValueError, match="kind"):
        Shape("blob", "red", (1, 2, 3), (0.5, 0.5), 0.3)
    with pytest.raises(ValueError, match="texture"):
        Shape("circle", "red", (1, 2, 3), (0.5, 0.5), 0.3, texture="plaid")


def test_generation_style_varies_every_factor_within_its_ranges():
    # The GPT's style keeps every factor varying but in narrower ranges: solid shapes, flat or gradient
    # backgrounds, large sizes near the centre, small tilts.
    from mmaccel.data.scenes import class_scene

    rng = np.random.default_rng(5)
    scenes = [class_scene(i % NUM_CLASSES, rng, style="generation") for i in range(300)]
    shapes = [s.shapes[0] for s in scenes]
    assert {s.texture for s in shapes} == {"solid"}
    assert {s.background_texture for s in scenes} == {"flat", "gradient"}
    sizes = np.array([s.size for s in shapes])
    assert sizes.min() >= 0.55 and sizes.max() <= 0.8 and sizes.std() > 0.05
    tilts = np.array([s.rotation for s in shapes])
    assert np.abs(tilts).max() <= 15 and tilts.std() > 4
    assert len({s.colour for s in shapes}) == len(COLOURS)
    centres = np.array([s.center for s in shapes])
    assert centres.std(axis=0).min() > 0.02 and np.abs(centres - 0.5).max() <= 0.06
    for s in shapes:  # the whole shape stays in the frame
        assert min(s.bbox) >= 0 and max(s.bbox) <= 1


def test_unknown_style_is_named():
    with pytest.raises(ValueError, match="style"):
        make_dataset(2, seed=0, style="fancy")
