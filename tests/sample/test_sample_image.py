"""``mmaccel sample image`` on the shipped default model: one process and torchrun with 2 CPU processes write
byte-identical samples; resuming and every refusal of the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mmaccel.cli import main

SAMPLE = ["sample", "image", "--method", "sjd", "--num-samples", "3", "--batch-size", "2", "--no-progress"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "s"
    assert main([*SAMPLE, "--npz", "--out", str(out)]) == 0
    return out


def test_torchrun_shards_are_byte_identical_to_one_process(single, tmp_path):
    out = tmp_path / "s2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "mmaccel", *SAMPLE]
    done = subprocess.run([*cmd, "--npz", "--out", str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(2 processes)" in done.stdout
    assert (out / "samples.npz").read_bytes() == (single / "samples.npz").read_bytes()
    for png in sorted(single.glob("*.png")):
        assert (out / png.name).read_bytes() == png.read_bytes()
    one, two = (json.loads((d / "samples.json").read_text()) for d in (single, out))
    assert two["world_size"] == 2 and one["seeds"] == two["seeds"] == [0, 1, 2]
    assert [s["forwards"] for s in one["samples"].values()] == [s["forwards"] for s in two["samples"].values()]


def test_record_and_npz_layout(single):
    record = json.loads((single / "samples.json").read_text())
    assert record["run"]["method"] == "sjd" and record["complete"] and record["conditions"] == [0, 1, 2]
    assert sorted(p.name for p in single.glob("*.png")) == ["000000_seed0.png", "000001_seed1.png", "000002_seed2.png"]
    for s in record["samples"].values():
        assert s["forwards"] * s["accepted_length"] == pytest.approx(s["tokens"])
    arr = np.load(single / "samples.npz")["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (3, 64, 64, 3)


def test_a_rerun_needs_resume_and_resume_has_nothing_to_do(single, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in single.glob("*.png")}
    assert main([*SAMPLE, "--out", str(single)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*SAMPLE, "--npz", "--resume", "--out", str(single)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in single.glob("*.png")} == before


def _refused(args, capsys, *words):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and "Traceback" not in err, err
    assert all(w in err for w in words), err


def test_another_run_in_the_folder_is_refused_even_with_resume(single, capsys):
    before = {p.name: p.read_bytes() for p in single.iterdir()}
    args = ["sample", "image", "--method", "gsd", "--num-samples", "3", "--batch-size", "2", "--no-progress"]
    _refused([*args, "--resume", "--out", str(single)], capsys, "--out", "another run", "method")
    _refused([*SAMPLE[:-3], "--seed", "5", "--resume", "--out", str(single)], capsys, "another run", "seeds")
    assert {p.name: p.read_bytes() for p in single.iterdir()} == before


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--num-samples", "0"], ["--num-samples", ">= 1"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--class", "dragon"], ["--class", "dragon"]),
        (["--class", "17"], ["--class"]),
        (["--method", "sjd", "--param", "window=0"], ["window"]),
        (["--prompt-file", "missing.txt"], ["--prompt-file"]),
        (["--temperature", "-1"], ["temperature"]),
        (["--threads", "0"], ["--threads"]),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, words):
    args = ["sample", "image", "--num-samples", "2", "--no-progress", "--out", str(tmp_path / "s"), *extra]
    _refused(args, capsys, *words)
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "s").write_text("x")
    _refused([*SAMPLE, "--out", str(tmp_path / "s")], capsys, "--out", "file")
