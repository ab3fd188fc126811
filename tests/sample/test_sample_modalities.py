"""``mmaccel sample video|speech|mesh`` on the shipped default models: files, samples.json, the per-modality .npz
layouts (read back from the files), resuming, and each refusal (exit 2, nothing written). Sharding is the core
driver's, modality-agnostic, and checked under torchrun in test_sample_image.py and test_sample_driver.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmaccel.cli import main

COMMON = ["--num-samples", "2", "--batch-size", "2", "--no-progress"]
VIDEO = ["sample", "video", "--method", "sjd:init=temporal-repeat", *COMMON]
SPEECH = ["sample", "speech", "--method", "sjd:window=4", "--max-steps", "24", *COMMON]
MESH = ["sample", "mesh", "--method", "sjd:init=face", "--max-faces", "6", *COMMON]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "s"
    assert main([*VIDEO, "--npz", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech") / "s"
    assert main([*SPEECH, "--npz", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    out = tmp_path_factory.mktemp("mesh") / "s"
    assert main([*MESH, "--npz", "--out", str(out)]) == 0
    return out


def _record(out):
    return json.loads((out / "samples.json").read_text())


def test_video_folder_and_npz(video):
    from mmaccel.eval.video_sets import read_clip

    record = _record(video)
    assert record["modality"] == "video" and record["complete"] and record["conditions"] == [0, 1]
    assert record["run"]["params"] == {"init": "temporal-repeat"}
    files = sorted(p.name for p in video.glob("*.png"))
    assert files == ["000000_seed0.png", "000001_seed1.png"]
    arr = np.load(video / "samples.npz")["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (2, 8, 32, 32, 3)
    assert np.array_equal(arr[1], read_clip(video / files[1]))
    for s in record["samples"].values():
        assert s["forwards"] * s["accepted_length"] == pytest.approx(s["tokens"])
        assert len(s["frame_forwards"]) == 8


def test_video_npz_holds_the_pipelines_frames(video):
    from mmaccel.video.pipeline import VideoARPipeline

    out = VideoARPipeline.from_pretrained()([0, 1], method="sjd", init="temporal-repeat", seed=0, progress=False)
    assert np.array_equal(np.load(video / "samples.npz")["arr_0"], np.stack(out.frames))


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_clip_files_keep_their_frame_count_with_repeated_frames(tmp_path, suffix):
    from mmaccel.eval.video_sets import read_clip
    from mmaccel.video.sampler import save_clip

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4, (6, 8, 8, 3), dtype=np.uint8) * 60  # few colours: a GIF keeps them exactly
    frames[1] = frames[0]  # PIL merges a repeated frame into a longer one: the reader must undo it
    frames[3:] = frames[2]
    path = tmp_path / f"clip{suffix}"
    save_clip(frames, path)
    assert np.array_equal(read_clip(path), frames)


def test_video_resume_does_nothing_and_another_run_is_refused(video, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in video.iterdir()}
    assert main([*VIDEO, "--npz", "--resume", "--out", str(video)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in video.iterdir() if p.suffix == ".png"} == {
        k: v for k, v in before.items() if k.endswith(".png")
    }
    other = ["sample", "video", "--method", "mc-sjd", *COMMON, "--resume", "--out", str(video)]
    _refused(other, capsys, "another run", "method")


def test_speech_folder_and_npz(speech):
    from mmaccel.audio.sampler import read_wave

    record = _record(speech)
    assert record["modality"] == "speech" and record["run"]["voice"] == "m1"
    assert all(isinstance(t, str) and t.startswith("the ") for t in record["conditions"])
    files = sorted(speech.glob("*.wav"))
    assert [p.name for p in files] == ["000000_seed0.wav", "000001_seed1.wav"]
    data = np.load(speech / "samples.npz")
    assert data["arr_0"].dtype == np.float32 and int(data["sample_rate"]) == 16000
    for i, f in enumerate(files):
        wave = read_wave(f, 16000)
        assert data["lengths"][i] == len(wave)
        assert np.array_equal(data["arr_0"][i, : len(wave)], wave)  # float WAVs: bit for bit
        assert not data["arr_0"][i, len(wave) :].any()


def test_mesh_folder_and_npz(mesh):
    from mmaccel.mesh.sampler import triangle_soup

    record = _record(mesh)
    assert record["modality"] == "mesh" and record["run"]["max_faces"] == 6
    files = sorted(mesh.glob("*.obj"))
    assert len(files) == 2
    data = np.load(mesh / "samples.npz")
    assert data["arr_0"].dtype == np.float32 and data["arr_0"].shape[2:] == (3, 3)
    for i, f in enumerate(files):
        soup = triangle_soup(f)
        assert data["lengths"][i] == len(soup) == record["samples"][str(i)]["faces"]
        assert np.array_equal(data["arr_0"][i, : len(soup)], soup)


def test_an_empty_mesh_is_still_a_file(tmp_path):
    import trimesh

    from mmaccel.mesh.sampler import save_mesh, triangle_soup

    for suffix in (".obj", ".ply", ".glb"):
        path = tmp_path / f"empty{suffix}"
        save_mesh(trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=int)), path, "no eos")
        assert path.is_file() and triangle_soup(path).shape == (0, 3, 3)


def _refused(args, capsys, *words):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and "Traceback" not in err, err
    assert all(w in err for w in words), err


@pytest.mark.parametrize(
    "args, words",
    [
        (["sample", "video", "--num-samples", "0"], ["--num-samples", ">= 1"]),
        (["sample", "speech", "--num-samples", "0"], ["--num-samples", ">= 1"]),
        (["sample", "mesh", "--num-samples", "0"], ["--num-samples", ">= 1"]),
        (["sample", "video", "--num-samples", "2", "--class", "dragon"], ["--class", "dragon"]),
        (["sample", "video", "--num-samples", "2", "--format", "webm"], ["--format", "webm"]),
        (["sample", "video", "--num-samples", "2", "--init", "diagonal-ish"], ["--init"]),
        (["sample", "video", "--num-samples", "2", "--prompt-file", "p.txt"], ["--prompt-file", "--class"]),
        (["sample", "speech", "--num-samples", "2", "--class", "3"], ["--class", "--prompt-file"]),
        (["sample", "speech", "--num-samples", "2", "--voice", "robot"], ["--voice", "robot"]),
        (["sample", "speech", "--num-samples", "2", "--method", "sjd:window=0"], ["window"]),
        (["sample", "mesh", "--num-samples", "2", "--format", "stl"], ["--format", "stl"]),
        (["sample", "mesh", "--num-samples", "2", "--class", "teapot"], ["--class", "teapot"]),
        (["sample", "mesh", "--num-samples", "2", "--max-faces", "100000"], ["--max-faces"]),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, words):
    _refused([*args, "--no-progress", "--out", str(tmp_path / "s")], capsys, *words)
    assert list(tmp_path.iterdir()) == []


def test_mp4_without_pyav_is_refused(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("av") is not None:
        pytest.skip("PyAV is installed here")
    _refused(["sample", "video", "--num-samples", "2", "--format", "mp4", "--out", str(tmp_path / "s")], capsys,
             "--format mp4", "pip install av")
    assert list(tmp_path.iterdir()) == []


def test_a_speech_prompt_file_with_an_unusable_text_is_refused(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("the red square is left of the star\n" + "the red star " * 40 + "\n")
    _refused(["sample", "speech", "--num-samples", "2", "--prompt-file", str(prompts), "--out", str(tmp_path / "s")],
             capsys, "text 1", "phonemes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]
