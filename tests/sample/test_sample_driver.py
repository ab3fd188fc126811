"""The modality-agnostic sample driver on a fake sampler: naming, samples.json, resuming, refusals, atomicity,
and the fixed batches that make shards identical to a one-process run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmaccel.sample import RECORD, SampleRun, read_image_array, run_samples, sample_name, shard


class FakeSampler:
    """Images that depend on the seed, the condition and (deliberately) the batch they are generated in."""

    suffix = ".png"

    def __init__(self, fail_at: int | None = None):
        self.batches: list[list[int]] = []
        self.saved = 0
        self.fail_at = fail_at

    def generate(self, conditions, seeds):
        self.batches.append(list(seeds))
        out = []
        for c, s in zip(conditions, seeds):
            rng = np.random.default_rng(s * 1000 + c + 7 * len(seeds))
            out.append((rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), {"forwards": 3, "accepted_length": 2.0}))
        return out

    def save(self, media, path: Path) -> None:
        if self.fail_at is not None and self.saved == self.fail_at:
            Path(path).write_bytes(b"half a png")  # then die, as a killed process would
            raise KeyboardInterrupt
        self.saved += 1
        Image.fromarray(media).save(path, format="PNG")


def make_run(n=5, batch=2, method="sjd", seed=0) -> SampleRun:
    return SampleRun("image", {"method": method}, [seed + i for i in range(n)], [i % 3 for i in range(n)], batch)


def test_files_record_and_npz(tmp_path):
    sampler = FakeSampler()
    record = run_samples(lambda: sampler, make_run(), tmp_path / "s", npz=True, progress=False)
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == [sample_name(i, i, ".png") for i in range(5)] + [RECORD, "samples.npz"]
    assert sampler.batches == [[0, 1], [2, 3], [4]]
    assert record["complete"] and record["npz"] == "samples.npz" and record["seeds"] == list(range(5))
    assert record["samples"]["3"]["seed"] == 3 and record["samples"]["3"]["condition"] == 0
    assert record["samples"]["3"]["forwards"] == 3 and record["samples"]["3"]["batch_size"] == 2
    arr = np.load(tmp_path / "s" / "samples.npz")["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (5, 8, 8, 3)
    assert (arr[4] == read_image_array(tmp_path / "s" / sample_name(4, 4, ".png"))).all()


def test_resume_skips_finished_batches_and_regenerates_a_partial_one(tmp_path):
    out = tmp_path / "s"
    run_samples(lambda: FakeSampler(), make_run(), out, npz=True, progress=False)
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (out / sample_name(3, 3, ".png")).unlink()  # batch [2, 3] lost one file
    sampler = FakeSampler()
    run_samples(lambda: sampler, make_run(), out, npz=True, resume=True, progress=False)
    assert sampler.batches == [[2, 3]]  # the whole batch again, so its composition (and bytes) stay the same
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before
    assert (out / sample_name(0, 0, ".png")).stat().st_mtime_ns == stamps[sample_name(0, 0, ".png")]


def test_an_existing_run_needs_resume_and_another_run_is_refused(tmp_path):
    out = tmp_path / "s"
    run_samples(lambda: FakeSampler(), make_run(), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="--resume"):
        run_samples(lambda: FakeSampler(), make_run(), out, progress=False)
    for other in (make_run(method="lantern"), make_run(seed=1), make_run(n=6), make_run(batch=3)):
        with pytest.raises(ValueError, match="another run"):
            run_samples(lambda: FakeSampler(), other, out, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "000000.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="no samples.json"):
        run_samples(lambda: FakeSampler(), make_run(), tmp_path, progress=False)


def test_a_killed_run_leaves_no_half_written_file_and_no_npz(tmp_path):
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        run_samples(lambda: FakeSampler(fail_at=3), make_run(), out, npz=True, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == [sample_name(i, i, ".png") for i in range(3)] + [RECORD]
    record = json.loads((out / RECORD).read_text())
    assert not record["complete"] and sorted(record["samples"]) == ["0", "1"]  # batch [2, 3] was cut short
    run_samples(lambda: FakeSampler(), make_run(), out, npz=True, resume=True, progress=False)
    assert (out / "samples.npz").is_file()


def test_ranks_take_whole_batches_in_turn():
    batches = make_run(n=7).batches()
    assert [shard(batches, r, 2) for r in (0, 1)] == [[range(0, 2), range(4, 6)], [range(2, 4), range(6, 7)]]
    assert [shard(batches, r, 3) for r in (0, 1, 2)] == [[range(0, 2), range(6, 7)], [range(2, 4)], [range(4, 6)]]


@pytest.mark.parametrize("kwargs, flag", [({"n": 0}, "--num-samples"), ({"batch": 0}, "--batch-size")])
def test_bad_counts_name_their_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        make_run(**kwargs)
