"""`bench video` records: one per (method, batch), AR ratios of 1, ceilings, quality fields, the noise floor."""

import shutil

import pytest

from mmaccel.video.bench import run_bench
from mmaccel.video.classifier import VideoClassifier
from mmaccel.video.data import NUM_CLASSES


@pytest.fixture(scope="module")
def bench_dir(model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_model")
    for f in model_dir.iterdir():
        shutil.copy(f, folder / f.name)
    VideoClassifier(NUM_CLASSES, width=8).save(folder / "classifier.safetensors")
    return folder


def test_bench_records(bench_dir):
    spec = "sjd:init=temporal-repeat:schedule=row"  # a schedule rides in the spec
    records = run_bench(str(bench_dir), methods=["ar", spec], num_videos=3, batch_sizes=[1, 2], num_reference=8)
    assert [(r["method"], r["batch_size"]) for r in records] == [
        ("ar", 1), (spec, 1), ("ar", 2), (spec, 2), ("ar@seed2", 2)]
    assert records[1]["schedule"] == "row" and records[0]["schedule"] is None
    for r in records:
        keys = ("nfe", "tokens", "step_compression", "wall_s", "speedup", "ceiling", "class_accuracy", "shape_accuracy",
                "motion_accuracy", "fvd_domain")
        for key in keys:
            assert key in r
    assert records[0]["step_compression"] == 1.0 and records[0]["speedup"] == 1.0
    assert records[1]["nfe"] <= records[0]["nfe"] == 32


def test_part_accuracies_split_the_class_into_shape_and_motion():
    import numpy as np

    from mmaccel.video.bench import part_accuracies
    from mmaccel.video.data import CLASSES

    labels = np.arange(8)
    # Each prediction: the same shape with the other motion, for the first half; the right class for the rest.
    preds = np.where(labels < 4, labels ^ 1, labels)
    got = part_accuracies(preds, labels)
    assert all(CLASSES[p][0] == CLASSES[y][0] for p, y in zip(preds, labels))  # the fixture keeps every shape
    confusion = got.pop("shape_confusion")
    assert got == {"class_accuracy": 0.5, "shape_accuracy": 1.0, "motion_accuracy": 0.5}
    assert confusion == (2 * np.eye(4, dtype=int)).tolist()  # two clips a shape, each read as itself
    other_shape = (labels + 2) % 8  # same motion, the next shape
    got = part_accuracies(other_shape, labels)
    assert got.pop("shape_confusion") == (2 * np.roll(np.eye(4, dtype=int), 1, axis=1)).tolist()
    assert got == {"class_accuracy": 0.0, "shape_accuracy": 0.0, "motion_accuracy": 1.0}
