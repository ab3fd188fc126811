"""`mmaccel generate video --family emu3|cosmos --model DIR` and `mmaccel bench video --family ...` on tiny random
folders of the real classes (Emu3ForConditionalGeneration saved with save_pretrained; Cosmos AR under the official
names): greedy speculative decoding through the CLI is token-identical to AR at batch 2, and a wrong folder exits 2
naming --model and writes nothing."""

import json

import numpy as np
import pytest

from mmaccel.cli import main

EMU3_GRID = ["--frames", "3", "--height", "2", "--width", "3"]
PROMPTS = ["--prompt", "a red ball rolls left", "--prompt", "a cube"]  # different prompt lengths
GREEDY = ["--temperature", "0"]


@pytest.fixture(scope="module")
def condition(tmp_path_factory):
    path = tmp_path_factory.mktemp("condition") / "first_frame.npy"
    np.save(path, np.array([[3, 7, 1, 0, 5, 9], [2, 2, 8, 30, 11, 4]]))  # one 2 x 3 latent frame per clip
    return path


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_emu3_generate_writes_clips_and_greedy_matches_ar(emu3_dir, tmp_path, capsys):
    base = ["generate", "video", "--family", "emu3", "--model", str(emu3_dir), *EMU3_GRID, *PROMPTS, *GREEDY]
    code, _, err = _run([*base, "--method", "ar", "--out", str(tmp_path / "ar.gif")], capsys)
    assert code == 0, err
    code, _, err = _run([*base, "--method", "mc-sjd", "--init", "temporal-repeat", "--out", str(tmp_path / "sp.gif")],
                        capsys)
    assert code == 0, err
    names = {p.name for p in tmp_path.iterdir()}
    assert {f"sp_{i}{s}" for i in (0, 1) for s in (".gif", ".png", ".json")} <= names
    from PIL import Image, ImageSequence

    for i in (0, 1):
        with Image.open(tmp_path / f"ar_{i}.gif") as a, Image.open(tmp_path / f"sp_{i}.gif") as b:
            fa = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(a)]
            fb = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(b)]
        assert len(fa) == 6 and all(np.array_equal(x, y) for x, y in zip(fa, fb))  # 3 latent frames x 2
    stats = json.loads((tmp_path / "sp_1.json").read_text())
    assert stats["family"] == "emu3" and stats["method"] == "mc-sjd:init=temporal-repeat" and stats["tokens"] == 27


def test_cosmos_generate_writes_tokens_and_greedy_matches_ar(cosmos_dir, condition, tmp_path, capsys):
    base = ["generate", "video", "--family", "cosmos", "--model", str(cosmos_dir), "--condition", str(condition),
            *GREEDY]
    assert _run([*base, "--method", "ar", "--out", str(tmp_path / "ar.npz")], capsys)[0] == 0
    code, _, err = _run([*base, "--method", "sjd:init=temporal-repeat", "--out", str(tmp_path / "sp.npz")], capsys)
    assert code == 0, err
    for i in (0, 1):
        ar, sp = np.load(tmp_path / f"ar_{i}.npz"), np.load(tmp_path / f"sp_{i}.npz")
        assert sp["tokens"].shape == (3, 2, 3) and np.array_equal(ar["tokens"], sp["tokens"])
        assert int(sp["condition_frames"]) == 1 and sp["accept_step"].shape == (2, 2, 3)
    assert (tmp_path / "sp_0.png").is_file() and json.loads((tmp_path / "sp_0.json").read_text())["tokens"] == 12


@pytest.mark.parametrize("family", ["emu3", "cosmos"])
def test_bench_family_greedy_is_lossless(family, emu3_dir, cosmos_dir, condition, tmp_path, capsys):
    extra = [*EMU3_GRID, *PROMPTS] if family == "emu3" else ["--condition", str(condition)]
    folder = emu3_dir if family == "emu3" else cosmos_dir
    out = tmp_path / "bench.json"
    code, text, err = _run(["bench", "video", "--family", family, "--model", str(folder), *extra, *GREEDY,
                            "--methods", "ar,mc-sjd:init=temporal-repeat:window=8", "--num-videos", "2",
                            "--batch-sizes", "1,2", "--json", str(out)], capsys)
    assert code == 0, err
    records = json.loads(out.read_text())
    assert [(r["method"], r["batch_size"]) for r in records] == [
        ("ar", 1), ("mc-sjd:init=temporal-repeat:window=8", 1), ("ar", 2), ("mc-sjd:init=temporal-repeat:window=8", 2)
    ]
    assert all(r["matches_ar"] == 1.0 and r["family"] == family and r["ceiling"] > 0 for r in records)
    assert records[1]["step_compression"] >= 1.0 and "matches" not in err


def _refused(argv, tmp_path, capsys, *words):
    code, _, err = _run(argv, capsys)
    assert code == 2 and err.startswith("mmaccel: error: ") and "Traceback" not in err, err
    assert all(w in err for w in words), err
    assert [p for p in tmp_path.iterdir() if p.suffix != ".npy"] == []


def test_bad_folders_are_refused_naming_model(emu3_dir, cosmos_dir, condition, tmp_path, capsys):
    gen = ["generate", "video", "--out", str(tmp_path / "x.gif")]
    _refused([*gen, "--family", "emu3", "--model", str(tmp_path / "nope"), *EMU3_GRID, *PROMPTS], tmp_path, capsys,
             "--model", "not found")
    _refused([*gen, "--family", "emu3", "--model", str(cosmos_dir), *EMU3_GRID, *PROMPTS], tmp_path, capsys,
             "--model", "emu3")
    npz = ["generate", "video", "--out", str(tmp_path / "x.npz"), "--condition", str(condition)]
    _refused([*npz, "--family", "cosmos", "--model", str(emu3_dir)], tmp_path, capsys, "--model", "cosmos")
    _refused(["bench", "video", "--family", "cosmos", "--model", str(tmp_path / "nope"), "--json",
              str(tmp_path / "b.json")], tmp_path, capsys, "--model")
    _refused([*gen, "--family", "emu3", *EMU3_GRID, *PROMPTS], tmp_path, capsys, "--model")


def test_bad_family_input_is_refused(emu3_dir, cosmos_dir, condition, tmp_path, capsys):
    emu = ["generate", "video", "--family", "emu3", "--model", str(emu3_dir)]
    gif = ["--out", str(tmp_path / "x.gif")]
    _refused([*emu, *PROMPTS, *gif], tmp_path, capsys, "--frames", "--height", "--width")
    _refused([*emu, *EMU3_GRID, *gif], tmp_path, capsys, "--prompt")
    _refused([*emu, *EMU3_GRID, *PROMPTS, "--class", "1", *gif], tmp_path, capsys, "--class")
    _refused([*emu, *EMU3_GRID, *PROMPTS, "--schedule", "frame", *gif], tmp_path, capsys, "--schedule")
    _refused([*emu, *EMU3_GRID, *PROMPTS, "--out", str(tmp_path / "x.npz")], tmp_path, capsys, "--out")
    _refused(["generate", "video", "--family", "chameleon", "--model", str(emu3_dir), *gif], tmp_path, capsys,
             "--family", "emu3, cosmos")
    cos = ["generate", "video", "--family", "cosmos", "--model", str(cosmos_dir), "--condition", str(condition)]
    _refused([*cos, *gif], tmp_path, capsys, "--out", ".npz")
    _refused([*cos, "--frames", "2", "--out", str(tmp_path / "x.npz")], tmp_path, capsys, "--frames")
    _refused([*cos, "--guidance-scale", "2", "--out", str(tmp_path / "x.npz")], tmp_path, capsys, "--guidance-scale")
    half = tmp_path / "half.npy"
    np.save(half, np.array([1, 2, 3]))
    _refused([*cos[:-1], str(half), "--out", str(tmp_path / "x.npz")], tmp_path, capsys, "whole latent frames")
    half.unlink()
