"""The image pipeline and CLI on a tiny random model saved to disk: every method runs, greedy speculative
decoding is token-identical to AR, guidance keeps rows in step, and bad input fails cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmaccel.cli import main
from mmaccel.image.llamagen import LlamaGenModel
from mmaccel.image.pipeline import ImageARPipeline
from mmaccel.methods import METHODS


@pytest.fixture(scope="module")
def pipe(model_dir):
    return ImageARPipeline.from_pretrained(model_dir)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_and_reports(pipe, method):
    if METHODS[method].drafter == "eagle":  # the folder holds no EAGLE head (tests/image/test_eagle.py has one)
        with pytest.raises(ValueError, match="needs EAGLE head weights"):
            pipe([0, 1], method=method, progress=False)
        return
    out = pipe([0, 1], method=method, guidance_scale=2.0, seed=3, progress=False)
    assert len(out.images) == len(out.acceptance_maps) == 2
    assert out.tokens.shape == (2, pipe.model.num_tokens)
    assert 0 <= int(out.tokens.min()) and int(out.tokens.max()) < pipe.model.vocab_size
    for s in out.stats:
        assert 1 <= s["steps"] <= s["ar_steps"]
        assert s["step_compression"] == pytest.approx(s["ar_steps"] / s["steps"])


@pytest.mark.parametrize("method", ["sjd", "gsd", "lantern", "typical", "draft", "lantern-draft", "lantern++"])
def test_greedy_methods_reproduce_ar_tokens(pipe, method):
    ar = pipe([0, 2, 4], method="ar", temperature=0, guidance_scale=1.5, progress=False)
    fast = pipe([0, 2, 4], method=method, temperature=0, guidance_scale=1.5, progress=False)
    assert torch.equal(ar.tokens, fast.tokens)


def test_same_model_as_draft_accepts_many_tokens(model_dir):
    pipe = ImageARPipeline.from_pretrained(model_dir)
    pipe.draft = LlamaGenModel(pipe.model.gpt)  # a perfect drafter: everything must be accepted
    out = pipe([1], method="draft", temperature=0, progress=False)
    assert out.stats[0]["step_compression"] > 3


def test_acceptance_map_marks_late_cells_brighter(pipe):
    out = pipe([1], method="ar", progress=False)
    image = out.acceptance_maps[0]
    # The map is the top square of the image (the legend sits below); sample the centres of the first and last
    # cells, away from the lines between cells.
    rows, cols = pipe.grid
    cell = image.width // cols
    pixels = torch.tensor(np.array(image), dtype=torch.float32).sum(-1)
    first = pixels[cell // 2, cell // 2]
    last = pixels[(rows - 1) * cell + cell // 2, (cols - 1) * cell + cell // 2]
    assert last > first  # AR accepts in raster order: the last cell is the latest


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(class_labels=[99]), "class_labels"),
        (dict(class_labels=[0], method="nope"), "method"),
        (dict(class_labels=[0], method="lantern", wrong=1), "wrong"),
        (dict(class_labels=[0], num_images=0), "num_images"),
        (dict(class_labels=[0], guidance_scale=-1.0), "guidance_scale"),
        (dict(class_labels=[0], method="lantern", delta=2.0), "delta"),
    ],
)
def test_bad_input(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(progress=False, **kwargs)


def test_cli_writes_image_map_and_stats(model_dir, tmp_path, capsys):
    out = tmp_path / "img.png"
    code = main(["generate", "image", "--model", str(model_dir), "--class", "1", "--method", "sjd", "--out", str(out)])
    assert code == 0
    stats = json.loads((tmp_path / "img.json").read_text())
    assert stats[0]["method"] == "sjd" and (tmp_path / "img_acceptance.png").is_file() and out.is_file()
    assert "plain AR" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, match",
    [
        (["--class", "42"], "--class must be in [0, 5)"),
        (["--class", "0", "--method", "fast"], "method"),
        (["--class", "0", "--num-images", "0"], "num-images"),
        (["--class", "0", "--param", "bogus=3"], "bogus"),
        (["--prompt", "a red square"], "class-conditional"),
        ([], "--class"),
        (["--class", "0", "--family", "dalle"], "dalle"),
    ],
)
def test_cli_bad_input_leaves_no_files(model_dir, tmp_path, capsys, args, match):
    code = main(["generate", "image", "--model", str(model_dir), "--out", str(tmp_path / "x.png"), *args])
    assert code == 2
    assert match in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_unwritable_and_missing_paths(model_dir, tmp_path, capsys):
    assert main(["generate", "image", "--class", "0", "--model", str(model_dir), "--out", "/nonexistent/x.png"]) == 2
    assert "/nonexistent" in capsys.readouterr().err
    assert main(["generate", "image", "--class", "0", "--model", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "gpt.safetensors" in capsys.readouterr().err


def test_corrupt_weights_file_is_named(model_dir, tmp_path, capsys):
    for f in model_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "gpt.safetensors").write_bytes(b"not a safetensors file")
    code = main(["generate", "image", "--class", "0", "--model", str(tmp_path), "--out", str(tmp_path / "o.png")])
    assert code == 2
    assert "gpt.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
