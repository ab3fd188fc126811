"""`mmaccel generate mesh` writes the mesh, its render and its stats; every bad input exits 2 with a message
naming the flag or file and leaves no file behind."""

import json
import shutil

import pytest

from mmaccel.cli import main

GENERATE = ["generate", "mesh", "--class", "cone", "--max-faces", "2"]


def test_generate_writes_mesh_render_and_stats(model_dir, tmp_path, capsys):
    out = tmp_path / "cone.obj"
    code = main([*GENERATE, "--model", str(model_dir), "--method", "sjd:init=face", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    stats = json.loads((tmp_path / "cone.json").read_text())
    assert stats["class"] == "cone" and stats["method"] == "sjd" and "report" in stats
    names = sorted(p.name for p in tmp_path.iterdir())
    # a random model may write no face at all: then the stats say so and no mesh file is written
    assert names == (["cone.json", "cone.obj", "cone.png"] if stats["faces"] else ["cone.json", "cone.png"])


@pytest.mark.parametrize("mask", ["on", "off"])
def test_generate_structure_mask_flag(model_dir, tmp_path, mask):
    out = tmp_path / "box.obj"
    code = main([*GENERATE, "--model", str(model_dir), "--method", "ar", "--structure-mask", mask, "--out", str(out)])
    assert code == 0
    assert json.loads((tmp_path / "box.json").read_text())["structure_mask"] is (mask == "on")


def test_structure_mask_takes_on_or_off(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own refusal: usage, then the error, exit 2
        main([*GENERATE, "--model", str(model_dir), "--structure-mask", "maybe", "--out", str(tmp_path / "x.obj")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--structure-mask" in err and "'on', 'off'" in err
    assert list(tmp_path.iterdir()) == []


def test_generate_several_meshes(model_dir, tmp_path):
    code = main([*GENERATE, "--model", str(model_dir), "--num-meshes", "2", "--out", str(tmp_path / "m.ply")])
    assert code == 0
    assert {"m_0.json", "m_1.json", "m_0.png", "m_1.png"} <= {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize(
    "extra, out_name, words",
    [
        (["--class", "dragon"], "x.obj", ["--class", "dragon", "cone"]),
        (["--class", "99"], "x.obj", ["--class", "[0, 9)"]),
        (["--max-faces", "50"], "x.obj", ["--max-faces", "context"]),
        (["--max-faces", "0"], "x.obj", ["--max-faces", ">= 1"]),
        ([], "x.stl", ["--out", ".stl", ".obj"]),
        ([], "x", ["--out", ".obj"]),
        (["--method", "warp"], "x.obj", ["warp", "sjd"]),
        (["--method", "xspec", "--param", "rule=magic"], "x.obj", ["magic"]),
        (["--method", "xspec", "--param", "epsilon=abc"], "x.obj", ["epsilon"]),
        (["--method", "sjd", "--param", "init=spiral"], "x.obj", ["init", "face"]),
        (["--temperature", "-1"], "x.obj", ["temperature"]),
    ],
)
def test_generate_refuses_bad_input_and_writes_nothing(model_dir, tmp_path, capsys, extra, out_name, words):
    code = main([*GENERATE, "--model", str(model_dir), "--out", str(tmp_path / out_name), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and "Traceback" not in err
    assert all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []


def test_bad_prefix_files(model_dir, tmp_path, capsys):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "junk.obj").write_bytes(b"\x00garbage")
    (bad / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    out = tmp_path / "out"
    out.mkdir()
    for name, word in (("junk.obj", "junk.obj"), ("points.obj", "no faces"), ("missing.obj", "missing.obj")):
        code = main([*GENERATE, "--model", str(model_dir), "--prefix", str(bad / name), "--out", str(out / "x.obj")])
        err = capsys.readouterr().err
        assert code == 2 and "--prefix" in err and word in err, err
    assert list(out.iterdir()) == []


def test_missing_corrupt_and_mismatched_checkpoints(model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "gpt.safetensors").write_bytes(b"not safetensors")
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "gpt_config.json").read_text())
    config["llama"]["hidden_size"] = 64
    (other / "gpt_config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    for folder, word in ((tmp_path / "nowhere", "nowhere"), (broken, "gpt.safetensors"), (other, "gpt.safetensors")):
        code = main([*GENERATE, "--model", str(folder), "--out", str(out / "x.obj")])
        err = capsys.readouterr().err
        assert code == 2 and word in err and "Traceback" not in err, err
    assert list(out.iterdir()) == []


def test_default_gpt_needs_class_and_takes_no_prompt(model_dir, tmp_path, capsys):
    out = str(tmp_path / "x.obj")
    for argv, word in (([], "--class"), (["--class", "cone", "--prompt", "a cone"], "--prompt")):
        code = main(["generate", "mesh", "--model", str(model_dir), *argv, "--out", out])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("mmaccel: error: ") and word in err, err
    assert list(tmp_path.iterdir()) == []
