"""What a new user meets on the command line: every bad input exits 2 with a message naming the flag or
parameter, and leaves no file behind; help shows defaults, class names and each method's parameters."""

import json

import pytest

from mmaccel.cli import main

GENERATE = ["generate", "image", "--class", "0"]


@pytest.mark.parametrize(
    "extra, out_name, words",
    [
        (["--method", "lantern", "--param", "delta=abc"], "x.png", ["delta", "float", "abc"]),
        (["--method", "gsd", "--param", "group=abc"], "x.png", ["group", "int", "abc"]),
        (["--method", "gsd", "--param", "group=2.5"], "x.png", ["group", "int"]),
        (["--method", "lantern", "--param", "delta=2"], "x.png", ["delta", "(0, 1]"]),
        (["--method", "sjd", "--window", "0"], "x.png", ["window"]),
        (["--method", "sjd", "--param", "init=spiral"], "x.png", ["init", "horizontal"]),
        (["--method", "warp"], "x.png", ["warp", "sjd"]),
        ([], "out.json", ["--out", ".png"]),
        ([], "out", ["--out", ".png"]),
        ([], "out.gif", ["--out", ".jpg"]),
        (["--class", "999"], "x.png", ["--class must be in [0, 5)"]),
        (["--class", "dragon"], "x.png", ["--class", "dragon"]),
        (["--temperature", "-1"], "x.png", ["temperature"]),
        (["--guidance-scale", "-2"], "x.png", ["guidance_scale"]),
    ],
)
def test_generate_refuses_bad_input_and_writes_nothing(model_dir, tmp_path, capsys, extra, out_name, words):
    code = main([*GENERATE, "--model", str(model_dir), "--out", str(tmp_path / out_name), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and "Traceback" not in err
    assert all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []


def test_window_flag_sets_the_window(model_dir, tmp_path):
    out = tmp_path / "w.jpg"
    assert main([*GENERATE, "--model", str(model_dir), "--method", "sjd", "--window", "3", "--out", str(out)]) == 0
    stats = json.loads((tmp_path / "w.json").read_text())
    assert stats[0]["method"] == "sjd" and out.is_file() and (tmp_path / "w_acceptance.jpg").is_file()
    # 3 drafts + 1 bonus token per forward at most: at least (64 tokens - 1) / 4 forwards after the prompt.
    assert stats[0]["steps"] >= 1 + (stats[0]["tokens"] - 1) // 4


def test_class_names_of_the_default_model(tmp_path, capsys):
    code = main([*GENERATE[:2], "--class", "star", "--method", "ar", "--out", str(tmp_path / "s.png")])
    assert code == 0 and (tmp_path / "s.png").is_file()
    assert json.loads((tmp_path / "s.json").read_text())[0]["class"] == 3


def test_help_shows_defaults_class_names_and_method_parameters(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "image", "--help"])
    text = capsys.readouterr().out
    for words in [
        "(default: gsd)",
        "(default: 2.0)",  # guidance
        "(default: 0.8)",  # temperature
        "(default: 1)",  # --num-images
        "circle, square, triangle, star",
        "--seed",
        "--top-k",
        "--top-p",
        "--window",
        "examples:",
        "delta: float or none in (0, 1], default 0.1",
        "group: int in [1, inf), default 10",
    ]:
        assert words in text, words
    with pytest.raises(SystemExit):
        main(["bench", "image", "--help"])
    assert "lantern-draft:delta=0.2:k=30" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("mmaccel 0.")


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--methods", "ar,lantern:delta=abc"], ["delta", "float"]),
        (["--methods", "ar,gsd:group=x"], ["group", "int"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--num-images", "0"], ["--num-images"]),
    ],
)
def test_bench_refuses_bad_input_and_writes_nothing(model_dir, tmp_path, capsys, extra, words):
    code = main(["bench", "image", "--model", str(model_dir), "--json", str(tmp_path / "b.json"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []


def test_bench_warns_that_few_images_give_a_noisy_fid(model_dir, tmp_path, capsys):
    args = ["bench", "image", "--model", str(model_dir), "--methods", "ar", "--num-images", "2", "--num-real", "8"]
    with pytest.warns(UserWarning, match="fewer than 50 images the FID"):
        assert main([*args, "--batch-size", "2", "--json", str(tmp_path / "b.json")]) == 0
    assert "images" in capsys.readouterr().err  # the progress bar
