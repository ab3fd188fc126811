"""The mesh heads' distillation script: it writes heads, and a continued run starts at the shard it is given."""

from safetensors.torch import load_file

from mmaccel.mesh.training import distill_heads


def test_a_continued_run_draws_from_its_first_shard_and_writes_hinted_heads(model_dir, tmp_path, capsys):
    distill_heads.main(["--model", str(model_dir), "--init", str(model_dir), "--hinted", "--out", str(tmp_path),
                        "--heads", "3", "--minutes", "0.35", "--batch-size", "2", "--eval-shapes", "2", "--first-shard", "5"])
    out = capsys.readouterr().out
    assert "(shards 5-" in out and "after:" in out
    assert "hint.weight" in load_file(str(tmp_path / "heads.safetensors"))
