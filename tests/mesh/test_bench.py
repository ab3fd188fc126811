"""`mmaccel bench mesh` on a tiny random model: every record carries DESIGN.md's fields and the mesh quality
fields; the metrics themselves on known shapes."""

import json
import shutil

import numpy as np
import pytest
import torch
import trimesh

from mmaccel.cli import main
from mmaccel.mesh.classifier import PointNetClassifier
from mmaccel.mesh.data import make_meshes
from mmaccel.mesh.metrics import chamfer_hausdorff, merge_close, set_metrics, surface_points, validity_breakdown
from mmaccel.mesh.tokenizer import MeshVocab, decode, encode


def test_chamfer_hausdorff_and_set_metrics():
    box = trimesh.creation.box()
    a, b = surface_points(box, 512, seed=0), surface_points(box, 512, seed=1)
    cd, hd = chamfer_hausdorff(a, a)
    assert cd == 0 and hd == 0
    cd, hd = chamfer_hausdorff(a, a + [0.1, 0, 0])
    assert 0 < cd <= 0.1 + 1e-9 and hd >= cd
    sphere = surface_points(trimesh.creation.icosphere(), 512)
    same = set_metrics([a], [b])
    assert same["cov"] == 1.0
    mixed = set_metrics([a, b], [sphere, sphere + 0.01])
    assert mixed["nna"] == 1.0  # boxes and spheres are told apart perfectly
    assert surface_points(trimesh.Trimesh(np.zeros((3, 3)), [[0, 1, 2]], process=False)) is None


def test_near_misses_are_counted_and_merging_them_is_an_upper_bound():
    vocab = MeshVocab(128, 9)
    box = make_meshes(1, 5)["box"][0]
    tokens = encode(box)
    clean, clean_report = decode(tokens, vocab)
    moved = tokens.copy()
    moved[-1] += 1 if moved[-1] < 127 else -1  # one corner of the last face off by one bin
    broken, broken_report = decode(moved, vocab)
    assert clean_report.valid and not broken_report.valid
    assert merge_close(broken)[1].valid and merge_close(clean)[1].valid
    figures = validity_breakdown([clean, broken], [clean_report, broken_report])
    assert figures["valid"] == 0.5 and figures["valid_if_merged"] == 1.0
    assert figures["stray_vertex"] == 0.5 and figures["stray_near_miss"] == 1.0


def test_bench_records(model_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    torch.manual_seed(0)
    PointNetClassifier(9, width=16).save(folder)
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "mesh",
            "--model",
            str(folder),
            "--methods",
            "ar,xspec,xspec:tree=2x1",
            "--num-meshes",
            "2",
            "--batch-sizes",
            "1,2",
            "--num-reference",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    records = json.loads(out.read_text())
    assert [(r["method"], r["batch_size"]) for r in records] == [
        ("ar", 1),
        ("xspec", 1),
        ("xspec:tree=2x1", 1),
        ("ar", 2),
        ("xspec", 2),
        ("xspec:tree=2x1", 2),
        ("ar@seed2", 2),
    ]
    # The ceiling's t(L+1) is timed at what one verify forward carries: a 2x1 tree's 4 nodes, a chain's heads.
    assert [r["window"] for r in records[:3]] == [0, 3, 4]
    for r in records:
        for key in (
            "nfe",
            "tokens",
            "step_compression",
            "wall_s",
            "speedup",
            "ceiling",
            "batch_size",
            "valid_rate",
            "chamfer",
            "hausdorff",
            "class_accuracy",
            "mmd",
            "cov",
            "nna",
            "step_compression_to_end",
        ):
            assert key in r, key
    assert records[0]["step_compression"] == 1.0 and records[0]["speedup"] == 1.0
    for r in records:  # one mesh of each of the two classes drawn: the per-class figures average to the whole
        by_class = r["class_accuracy_by_class"]
        assert sorted(by_class) == ["box", "prism"]
        assert np.mean(list(by_class.values())) == pytest.approx(r["class_accuracy"])
        valid = r["valid_by_class"]
        assert sorted(valid) == ["box", "prism"]
        assert np.mean(list(valid.values())) == pytest.approx(r["valid_rate"])


def test_bench_refuses_bad_flags_before_work(model_dir, tmp_path, capsys):
    for extra in (["--methods", "ar,warp"], ["--batch-sizes", "0"], ["--num-meshes", "0"]):
        code = main(["bench", "mesh", "--model", str(model_dir), "--json", str(tmp_path / "b.json"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("mmaccel: error: "), err
    assert list(tmp_path.iterdir()) == []
