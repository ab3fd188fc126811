"""The MeshGPT layout: round trips, sort order, garbage that decodes to a report (not a crash), file formats."""

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from mmaccel.mesh.data import CLASS_NAMES, MAX_FACES, class_index, make_dataset, make_shape
from mmaccel.mesh.metrics import NEAR_MISS_BINS
from mmaccel.mesh.tokenizer import MeshVocab, decode, encode, read_mesh, sequence, write_mesh

VOCAB = MeshVocab(128, len(CLASS_NAMES))


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_class_is_closed_small_and_round_trips(name):
    rng = np.random.default_rng(1)
    for _ in range(5):
        tokens = encode(make_shape(name, rng))
        assert len(tokens) % 9 == 0 and 0 < len(tokens) // 9 <= MAX_FACES
        assert tokens.max() < 128 and tokens.min() >= 0
        mesh, report = decode(tokens, VOCAB)
        assert report.valid and report.faces_kept == len(tokens) // 9 and report.out_of_order == 0
        assert mesh.volume > 0  # outward winding survives the face rotation
        np.testing.assert_array_equal(encode(mesh, normalised=True), tokens)
        # Distinct vertices lie more than NEAR_MISS_BINS apart (L-inf, in bins), so a generated vertex that close
        # to another is a near miss (mmaccel.mesh.metrics.validity_breakdown counts them).
        corners = np.unique(tokens.reshape(-1, 3), axis=0)
        assert cKDTree(corners).query(corners, k=2, p=np.inf)[0][:, 1].min() > NEAR_MISS_BINS


def test_training_vertices_lie_more_than_the_near_miss_distance_apart():
    tokens, _ = make_dataset(3000, 424242)  # the shapes behind NEAR_MISS_BINS's figure (13 bins at least)
    gaps = [
        cKDTree(c).query(c, k=2, p=np.inf)[0][:, 1].min() for c in (np.unique(t.reshape(-1, 3), axis=0) for t in tokens)
    ]
    assert min(gaps) == NEAR_MISS_BINS + 1


def test_sort_order_vertices_zyx_faces_by_lowest_vertex():
    tokens = encode(make_shape("stairs", np.random.default_rng(0))).reshape(-1, 3, 3)
    keys = tokens @ np.array([128**2, 128, 1])  # z most significant
    assert (keys[:, 0] <= keys[:, 1]).all() and (keys[:, 0] <= keys[:, 2]).all()  # lowest vertex first
    assert (np.diff(keys[:, 0]) >= 0).all()  # faces sorted by it
    first = keys[:, 0] * 128**4 + keys[:, 1] * 128**2 + keys[:, 2]
    assert (np.diff(first) > 0).all()  # then by the others: strictly, no repeated face


def test_quantisation_merges_vertices_and_drops_degenerate_faces():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1e-4, 0, 0], [0, 0, 1]], float)
    faces = np.array([[0, 1, 2], [0, 3, 2], [0, 1, 4]])  # vertex 3 quantises onto vertex 0
    tokens = encode(trimesh.Trimesh(vertices, faces, process=False))
    assert len(tokens) == 18


def test_sequence_layout():
    tokens = np.arange(18) % 128
    seq = sequence(tokens, 3, VOCAB, length=25)
    assert seq[0] == VOCAB.class_token(3) and seq[1] == VOCAB.bos and seq[20] == VOCAB.eos
    assert (seq[20:] == VOCAB.eos).all()
    with pytest.raises(ValueError, match="does not fit"):
        sequence(tokens, 3, VOCAB, length=10)


@pytest.mark.parametrize(
    "tokens, what",
    [
        ([], "no valid face"),
        ([VOCAB.eos] * 5, "no valid face"),
        ([5, 5, 5, 5, 5, 5, 5, 5, 5], "no valid face"),  # all corners equal: degenerate
        ([VOCAB.bos, 1, 2, 3, 4, 5, 6, 7, 8], "no valid face"),  # a non-coordinate token in the face
        ([1, 2, 3, 4], "no valid face"),  # an incomplete face
    ],
)
def test_garbage_decodes_to_a_report(tokens, what):
    mesh, report = decode(np.array(tokens, dtype=np.int64), VOCAB)
    assert len(mesh.faces) == 0 and not report.valid and what in report.errors


def test_open_surface_is_reported_not_valid():
    tokens = encode(make_shape("box", np.random.default_rng(0)))[: 9 * 5]
    mesh, report = decode(np.r_[tokens, VOCAB.eos, 7, 7], VOCAB)
    assert report.ended and report.faces_kept == 5 and not report.watertight and not report.valid


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".glb"])
def test_writers_round_trip(tmp_path, suffix):
    mesh, _ = decode(encode(make_shape("cone", np.random.default_rng(0))), VOCAB)
    path = write_mesh(mesh, tmp_path / f"m{suffix}")
    back = read_mesh(path)
    assert len(back.faces) == len(mesh.faces)
    assert [p.name for p in tmp_path.iterdir()] == [f"m{suffix}"]  # no temporary left


def test_bad_files_and_names(tmp_path):
    mesh, _ = decode(encode(make_shape("box", np.random.default_rng(0))), VOCAB)
    with pytest.raises(ValueError, match=r"'\.stl'"):
        write_mesh(mesh, tmp_path / "m.stl")
    (tmp_path / "bad.obj").write_bytes(b"\x00\x01 not a mesh")
    with pytest.raises(ValueError, match="bad.obj"):
        read_mesh(tmp_path / "bad.obj")
    (tmp_path / "empty.obj").write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(ValueError, match="no faces"):
        read_mesh(tmp_path / "empty.obj")
    with pytest.raises(FileNotFoundError, match="missing.obj"):
        read_mesh(tmp_path / "missing.obj")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.obj", "empty.obj"]
    with pytest.raises(ValueError, match="dragon"):
        class_index("dragon")
