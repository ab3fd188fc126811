"""`mmaccel generate video` writes the clip, its acceptance-map strip and its stats atomically; every bad input
exits 2 with a message naming the flag or file and leaves no file behind."""

import json

import pytest
from PIL import Image

from mmaccel.cli import main

GENERATE = ["generate", "video", "--class", "1"]


def test_generate_writes_gif_strip_and_stats(model_dir, tmp_path, capsys):
    out = tmp_path / "clip.gif"
    code = main([*GENERATE, "--model", str(model_dir), "--method", "mc-sjd", "--init", "temporal-repeat",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "clip.json", "clip.png"]
    stats = json.loads((tmp_path / "clip.json").read_text())
    assert stats["method"] == "mc-sjd" and stats["tokens"] == 32 and stats["label"] == 1
    with Image.open(out) as gif:
        assert gif.n_frames == 2


def test_generate_several_clips(model_dir, tmp_path):
    code = main([*GENERATE, "--model", str(model_dir), "--num-videos", "2", "--out", str(tmp_path / "v.gif")])
    assert code == 0
    assert {"v_0.gif", "v_1.gif", "v_0.json", "v_1.json", "v_0.png", "v_1.png"} == {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize(
    "extra, out_name, words",
    [
        (["--class", "dragon"], "x.gif", ["--class", "dragon"]),
        (["--class", "99"], "x.gif", ["--class", "[0, 3)"]),
        ([], "x.avi", ["--out", ".avi", ".gif"]),
        ([], "x", ["--out", ".gif"]),
        (["--method", "warp"], "x.gif", ["warp", "sjd"]),
        (["--init", "spiral"], "x.gif", ["--init", "temporal-repeat"]),
        (["--method", "sjd", "--param", "init=spiral"], "x.gif", ["init", "temporal-sample"]),
        (["--method", "sjd", "--param", "window=abc"], "x.gif", ["window"]),
        (["--num-videos", "0"], "x.gif", ["--num-videos"]),
        (["--temperature", "-1"], "x.gif", ["temperature"]),
        (["--schedule", "spiral"], "x.gif", ["--schedule", "diagonal"]),
        (["--method", "ar", "--schedule", "frame"], "x.gif", ["--schedule", "Jacobi"]),
    ],
)
def test_generate_refuses_bad_input_and_writes_nothing(model_dir, tmp_path, capsys, extra, out_name, words):
    code = main([*GENERATE, "--model", str(model_dir), "--out", str(tmp_path / out_name), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and "Traceback" not in err
    assert all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []


def test_missing_and_corrupt_model_files(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main([*GENERATE, "--model", str(empty), "--out", str(tmp_path / "a.gif")])
    assert code == 2 and "vq.safetensors" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "gpt.safetensors").write_bytes(b"\x00garbage")
    code = main([*GENERATE, "--model", str(bad), "--out", str(tmp_path / "b.gif")])
    err = capsys.readouterr().err
    assert code == 2 and "gpt.safetensors" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.gif"))


def test_missing_output_folder_refused(model_dir, tmp_path, capsys):
    code = main([*GENERATE, "--model", str(model_dir), "--out", str(tmp_path / "no" / "x.gif")])
    assert code == 2 and "output directory" in capsys.readouterr().err


def test_bench_refuses_bad_input(capsys, tmp_path):
    for extra, word in [(["--methods", "ar,warp"], "warp"), (["--num-videos", "0"], "--num-videos"),
                        (["--batch-sizes", "1,x"], "--batch-sizes"),
                        (["--methods", "ar,sjd:schedule=zigzag"], "schedule")]:
        code = main(["bench", "video", *extra, "--json", str(tmp_path / "b.json")])
        assert code == 2 and word in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_core_cli_helpers_the_video_cli_uses(tmp_path):
    import argparse

    from mmaccel.cli import (
        batch_sizes_argument,
        class_argument,
        count_argument,
        method_specs,
        output_files,
        param_argument,
    )
    from mmaccel.methods import parse_method

    assert batch_sizes_argument("1,8") == [1, 8] and class_argument("3") == 3 and class_argument("disk") == "disk"
    assert param_argument("window=8") == ("window", "8")
    with pytest.raises(argparse.ArgumentTypeError, match="--param"):
        param_argument("window")
    for bad in ("", "0,8", "a"):
        with pytest.raises(ValueError, match="--batch-sizes"):
            batch_sizes_argument(bad)
    with pytest.raises(ValueError, match="--num-videos must be >= 1"):
        count_argument(0, "--num-videos")
    assert method_specs(" ar, sjd:window=8 ,", parse_method) == ["ar", "sjd:window=8"]
    with pytest.raises(ValueError, match="nope"):
        method_specs("ar,nope", parse_method)
    files = output_files(tmp_path / "c.gif", 2, (".gif",), "video")
    assert [f.name for f in files[1]] == ["c_1.gif", "c_1.png", "c_1.json"]
    with pytest.raises(ValueError, match="unsupported video file extension '.avi'"):
        output_files(tmp_path / "c.avi", 1, (".gif",), "video")
