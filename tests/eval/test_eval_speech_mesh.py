"""``mmaccel eval speech`` (PER through the speech modality's recogniser, Fréchet distance in its feature space)
and ``mmaccel eval mesh`` (mesh/metrics.py's Chamfer, Hausdorff, MMD, COV, 1-NNA) over folders, and their
refusals (exit 2, no JSON written)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmaccel.cli import main


def _refused(args, capsys, *words):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and "Traceback" not in err, err
    assert all(w in err for w in words), err


def _printed(capsys, key) -> float:
    out = capsys.readouterr().out
    return float(next(line for line in out.splitlines() if line.startswith(f"{key}:")).split()[1])


@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    import soundfile

    folder = tmp_path_factory.mktemp("speech") / "w"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        t = np.arange(8000 + 1600 * i) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.01 * rng.standard_normal(len(t))
        soundfile.write(folder / f"{i:06d}_seed{i}.wav", wave.astype(np.float32), 16000, subtype="FLOAT")
    texts = ["the red square is left of the star", "the blue circle is above the red star", "the green star"]
    samples = {str(i): {"file": f"{i:06d}_seed{i}.wav", "condition": t} for i, t in enumerate(texts)}
    (folder / "samples.json").write_text(json.dumps({"samples": samples}))
    return folder, texts


def test_eval_speech_per_and_frechet(waves, tmp_path, capsys):
    folder, texts = waves
    out = tmp_path / "speech.json"
    assert main(["eval", "speech", "--samples", str(folder), "--real", str(folder), "--json", str(out)]) == 0
    assert _printed(capsys, "frechet") == 0.0
    record = json.loads(out.read_text())
    assert record["num_samples"] == 3 and record["per"] > 0  # tones are no speech: the recogniser errs
    prompts = tmp_path / "texts.txt"
    prompts.write_text("\n".join(texts) + "\n")
    assert main(["eval", "speech", "--samples", str(folder), "--texts", str(prompts)]) == 0
    assert _printed(capsys, "per") == pytest.approx(record["per"], abs=1e-4)


def test_eval_speech_refusals(waves, tmp_path, capsys):
    import soundfile

    folder, _ = waves
    out = tmp_path / "o.json"
    two = tmp_path / "two.txt"
    two.write_text("a\nb\n")
    _refused(["eval", "speech", "--samples", str(folder), "--texts", str(two), "--json", str(out)], capsys,
             "--texts", "2 lines for 3")
    bare = tmp_path / "bare"
    bare.mkdir()
    soundfile.write(bare / "a.wav", np.zeros(800, dtype=np.float32), 8000)
    _refused(["eval", "speech", "--samples", str(bare), "--json", str(out)], capsys, "samples.json", "--texts")
    one = tmp_path / "one.txt"
    one.write_text("the red star\n")
    _refused(["eval", "speech", "--samples", str(bare), "--texts", str(one), "--json", str(out)], capsys,
             "8000 Hz", "a.wav")
    (bare / "a.wav").write_bytes(b"RIFF broken")
    _refused(["eval", "speech", "--samples", str(bare), "--texts", str(one), "--json", str(out)], capsys,
             "cannot read audio file", "a.wav")
    _refused(["eval", "speech", "--samples", str(tmp_path / "none")], capsys, "--samples", "not a folder")
    _refused(["eval", "speech", "--samples", str(folder), "--real", str(bare)], capsys, "2 or more")
    assert not out.exists()


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    from mmaccel.mesh.data import make_meshes

    folder = tmp_path_factory.mktemp("mesh") / "real"
    folder.mkdir()
    for i, (name, ms) in enumerate(make_meshes(1, 5).items()):
        if i < 4:
            ms[0].export(folder / f"{i:02d}_{name}.obj")
    return folder


def test_eval_mesh_of_a_set_against_itself(meshes, tmp_path, capsys):
    import shutil

    fake = tmp_path / "fake"
    shutil.copytree(meshes, fake)
    (fake / "99_empty.obj").write_text("# mmaccel: no faces\n")  # what mmaccel sample mesh writes for no mesh
    out = tmp_path / "mesh.json"
    assert main(["eval", "mesh", "--real", str(meshes), "--fake", str(fake), "--points", "256",
                 "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["chamfer"] == 0.0 and record["hausdorff"] == 0.0 and record["mmd"] == 0.0 and record["cov"] == 1.0
    assert record["num_fake"] == 5 and record["empty_fake"] == 1 and record["scored_fake"] == 4


def test_eval_mesh_uses_mesh_metrics(meshes, tmp_path, capsys):
    from mmaccel.mesh.metrics import nearest_reference, set_metrics, surface_points
    from mmaccel.mesh.sampler import load_mesh

    files = sorted(meshes.glob("*.obj"))
    real, fake = files[:2], files[2:]
    for sub, group in (("r", real), ("f", fake)):
        (tmp_path / sub).mkdir()
        for f in group:
            (tmp_path / sub / f.name).write_bytes(f.read_bytes())
    assert main(["eval", "mesh", "--real", str(tmp_path / "r"), "--fake", str(tmp_path / "f"), "--points", "256",
                 "--json", str(tmp_path / "m.json")]) == 0
    record = json.loads((tmp_path / "m.json").read_text())
    r = [surface_points(load_mesh(f), 256) for f in real]
    g = [surface_points(load_mesh(f), 256) for f in fake]
    assert record["chamfer"] == pytest.approx(np.mean([nearest_reference(c, r)[0] for c in g]))
    assert record["nna"] == pytest.approx(set_metrics(g, r)["nna"])


def test_eval_mesh_refusals(meshes, tmp_path, capsys):
    out = tmp_path / "o.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(["eval", "mesh", "--real", str(empty), "--fake", str(meshes), "--json", str(out)], capsys,
             "--real", "no mesh file")
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(meshes.glob("*.obj"))[0]
    (one / first.name).write_bytes(first.read_bytes())
    _refused(["eval", "mesh", "--real", str(one), "--fake", str(meshes), "--json", str(out)], capsys,
             "--real", "at least 2")
    (one / "broken.glb").write_bytes(b"glTF broken")
    _refused(["eval", "mesh", "--real", str(one), "--fake", str(meshes), "--json", str(out)], capsys,
             "cannot read mesh file", "broken.glb")
    _refused(["eval", "mesh", "--real", str(meshes), "--fake", str(tmp_path / "none")], capsys, "--fake")
    _refused(["eval", "mesh", "--real", str(meshes), "--fake", str(meshes), "--points", "0"], capsys, "--points")
    assert not out.exists()
