"""The family layer: token layouts with row-end tokens, folder recognition, and LANTERN tables on disk."""

from __future__ import annotations

import os

import pytest
import torch

from mmaccel.acceptance import cached_neighbours
from mmaccel.image.family import TokenLayout, load_family
from mmaccel.image.llamagen_c2i import LlamaGenC2IFamily
from mmaccel.image.pipeline import ImageARPipeline


def test_layout_counts_and_grid_drop_row_ends():
    layout = TokenLayout(3, 4, row_end=9)
    assert layout.num_tokens == 15 and layout.row_length == 5
    tokens = torch.arange(15).view(1, 15)
    grid = layout.to_grid(tokens)
    assert grid.shape == (1, 3, 4)
    assert grid[0, 1].tolist() == [5, 6, 7, 8]  # index 4 (a row end) is skipped
    ends = layout.is_row_end(torch.arange(15))
    assert ends.nonzero().flatten().tolist() == [4, 9, 14]
    with pytest.raises(ValueError, match="15"):
        layout.to_grid(torch.zeros(1, 12))


def test_constrain_forces_row_ends_and_forbids_them_elsewhere():
    layout = TokenLayout(2, 3, row_end=5)
    logits = torch.zeros(2, 8, 6)
    index = torch.arange(-1, 7).expand(2, 8)
    out = layout.constrain(logits, index)
    best = out.argmax(-1)[0]
    for i, idx in enumerate(index[0].tolist()):
        finite = torch.isfinite(out[0, i])
        if 0 <= idx < layout.num_tokens and idx % 4 == 3:
            assert finite.nonzero().flatten().tolist() == [5] and best[i] == 5
        elif 0 <= idx < layout.num_tokens:
            assert not finite[5] and finite[:5].all()
        else:
            assert finite.all()  # outside the image nothing is forced
    assert torch.equal(TokenLayout(2, 3).constrain(logits, index), logits)


def test_row_end_embedding_is_nobodys_neighbour():
    layout = TokenLayout(2, 2, row_end=6)
    table = layout.with_row_end(torch.randn(6, 3))
    assert table.shape == (7, 4)
    from mmaccel.acceptance import nearest_neighbours

    assert not (nearest_neighbours(table, 5)[:6] == 6).any()
    with pytest.raises(ValueError, match="row-end"):
        layout.with_row_end(torch.randn(5, 3))


def test_neighbour_table_is_computed_once_and_kept_beside_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("MMACCEL_CACHE", str(tmp_path / "cache"))
    codebook = torch.randn(50, 4)
    first = cached_neighbours(codebook, 7, tmp_path)
    files = list(tmp_path.glob("lantern_k7_*.safetensors"))
    assert len(files) == 1
    calls = []
    import mmaccel.acceptance.neighbours as neighbours

    monkeypatch.setattr(neighbours, "nearest_neighbours", lambda *a: calls.append(a))
    assert torch.equal(cached_neighbours(codebook, 7, tmp_path), first) and not calls
    # Another codebook gets its own table, never the stale one.
    monkeypatch.undo()
    monkeypatch.setenv("MMACCEL_CACHE", str(tmp_path / "cache"))
    other = cached_neighbours(codebook.flip(0), 7, tmp_path)
    assert len(list(tmp_path.glob("lantern_k7_*.safetensors"))) == 2 and not torch.equal(other, first)
    # A damaged file is recomputed, not trusted.
    files[0].write_bytes(b"garbage")
    assert torch.equal(cached_neighbours(codebook, 7, tmp_path), first)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_checkpoint_folder_uses_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MMACCEL_CACHE", str(tmp_path / "cache"))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        cached_neighbours(torch.randn(20, 3), 4, ro)
    finally:
        ro.chmod(0o755)
    assert not list(ro.iterdir()) and list((tmp_path / "cache" / "neighbours").glob("lantern_k4_*"))


def test_unwritable_places_still_give_the_table(tmp_path, monkeypatch):
    # Works whoever runs it: the cache root is a file, so nothing can be written anywhere.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MMACCEL_CACHE", str(blocker))
    codebook = torch.randn(20, 3)
    from mmaccel.acceptance import nearest_neighbours

    assert torch.equal(cached_neighbours(codebook, 4, None), nearest_neighbours(codebook, 4))


def test_folder_recognition(model_dir, tmp_path):
    assert isinstance(load_family(model_dir), LlamaGenC2IFamily)
    with pytest.raises(ValueError, match="no recognisable") as err:
        load_family(tmp_path)
    assert "gpt.safetensors" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_family(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown image model family"):
        load_family(model_dir, family="dalle")


def test_class_model_refuses_a_text_prompt(model_dir):
    pipe = ImageARPipeline.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="class-conditional"):
        pipe(prompt="a red square", progress=False)
    with pytest.raises(ValueError, match="not both"):
        pipe(class_labels=[0], prompt="a red square", progress=False)
    with pytest.raises(ValueError, match="class_labels"):
        pipe(progress=False)


def test_lantern_table_lands_beside_the_model(model_dir):
    pipe = ImageARPipeline.from_pretrained(model_dir)
    pipe([0], method="lantern", k=5, progress=False)
    assert list(model_dir.glob("lantern_k5_*.safetensors"))
