"""The heads' self-distillation data: a pool of the GPT's own samples, and distillation on it against the
decoding target (guided and masked, as the pipeline samples)."""

import pytest
import torch
from safetensors.torch import load_file

from mmaccel.mesh.pipeline import MeshARPipeline
from mmaccel.mesh.training import distill_heads, sample_pool


@pytest.fixture(scope="module")
def pool(model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("pool") / "pool.safetensors"
    sample_pool.main(["--model", str(model_dir), "--num", "36", "--chunk", "12", "--seed", "500", "--out", str(path)])
    return path


def test_the_pool_holds_the_pipelines_own_ar_samples_behind_their_prompts(pool, model_dir):
    tokens, settings = sample_pool.load_pool(pool)
    pipe = MeshARPipeline.from_pretrained(model_dir)
    vocab = pipe.model.vocab
    assert tokens.shape[0] == 36 and settings["guidance_scale"] == 1.5 and settings["seed"] == 500
    assert tokens[:, 0].tolist() == [int(vocab.class_token(torch.tensor(i % vocab.num_classes))) for i in range(36)]
    assert (tokens[:, 1] == vocab.bos).all()
    # Rows 12..23 are the second chunk: seeds 512.., the same as the pipeline's own AR draws there.
    labels = [i % vocab.num_classes for i in range(12, 24)]
    again = pipe(labels, method="ar", seed=512, progress=False)
    assert torch.equal(tokens[12:24, 2:], again.tokens)


def test_a_stopped_pool_resumes_to_the_same_rows_and_other_settings_are_refused(pool, model_dir, tmp_path, capsys):
    path = tmp_path / "pool.safetensors"
    args = ["--model", str(model_dir), "--chunk", "12", "--seed", "500", "--out", str(path)]
    sample_pool.main(args + ["--num", "24"])
    sample_pool.main(args + ["--num", "36"])
    assert "resuming" in capsys.readouterr().out
    assert torch.equal(sample_pool.load_pool(path)[0], sample_pool.load_pool(pool)[0])
    before = path.read_bytes()
    with pytest.raises(SystemExit, match="--out .*sampled with"):
        sample_pool.main(["--model", str(model_dir), "--num", "48", "--seed", "7", "--out", str(path)])
    assert path.read_bytes() == before


def test_bad_pool_files_and_names_are_refused(tmp_path, model_dir):
    with pytest.raises(SystemExit, match="--out"):
        sample_pool.main(["--model", str(model_dir), "--num", "2", "--out", str(tmp_path / "pool.pt")])
    assert not list(tmp_path.iterdir())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a pool")
    with pytest.raises(SystemExit, match="--out .*bad.safetensors"):
        sample_pool.main(["--model", str(model_dir), "--num", "2", "--out", str(bad)])
    assert bad.read_bytes() == b"not a pool"
    with pytest.raises(ValueError, match="bad.safetensors"):
        sample_pool.load_pool(bad)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        sample_pool.load_pool(tmp_path / "missing.safetensors")


def test_heads_distil_on_the_pool_against_the_guided_masked_target(pool, model_dir, tmp_path, capsys):
    distill_heads.main(["--model", str(model_dir), "--init", str(model_dir), "--out", str(tmp_path), "--pool", str(pool),
                        "--guidance", "1.5", "--structure-mask", "--temperature", "0.7", "--minutes", "0.3",
                        "--batch-size", "4", "--eval-shapes", "8", "--heads", "3"])
    out = capsys.readouterr().out
    assert "against the decoding target on held-out pool rows" in out
    assert "passes over the pool" in out and "after:" in out and "nan" not in out
    assert out.count("top drafts (xspec:branch=top)") == 2  # before and after
    assert len(load_file(str(tmp_path / "heads.safetensors"))) > 0


def test_pool_batches_cut_the_padding_after_the_longest_mesh():
    eos = 9
    rows = torch.full((4, 12), eos)
    rows[:, :2] = 7
    rows[0, 2:5] = 1  # mesh ends at 5
    rows[1, 2:8] = 1  # ends at 8
    batch = next(distill_heads.pool_batches(rows[:2], 2, eos, torch.Generator()))
    assert batch.shape == (2, 10)  # eos at 8, then one eos-to-eos step
    assert distill_heads.end_of_mesh(rows, eos).tolist() == [5, 8, 2, 2]
