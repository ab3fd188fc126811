"""The mesh heads' distillation script: it writes heads, and a continued run starts at the shard it is given."""

import pytest
import torch
from safetensors.torch import load_file

from mmaccel.drafting.heads import DraftHeads
from mmaccel.mesh.model import load_mesh_gpt

from mmaccel.mesh.training import distill_heads


def test_a_continued_run_draws_from_its_first_shard_and_writes_hinted_heads(model_dir, tmp_path, capsys):
    distill_heads.main(["--model", str(model_dir), "--init", str(model_dir), "--hinted", "--out", str(tmp_path),
                        "--heads", "3", "--minutes", "0.35", "--batch-size", "2", "--eval-shapes", "2", "--first-shard", "5"])
    out = capsys.readouterr().out
    assert "(shards 5-" in out and "after:" in out
    assert "hint.weight" in load_file(str(tmp_path / "heads.safetensors"))



def test_top_draft_acceptance_is_the_targets_probability_of_the_heads_most_likely_token(model_dir):
    """With every head all but certain of one token, a sampled draft is that token, so the two figures agree;
    and the top figure is the target's own probability of it, whatever the heads' certainty."""
    model = load_mesh_gpt(model_dir)
    eos = model.vocab.eos
    torch.manual_seed(0)
    rows = torch.randint(0, 128, (4, 2 + 27))
    rows[:, 0] = model.vocab.class_token(torch.arange(4) % model.vocab.num_classes)
    rows[:, 1], rows[:, -5:] = model.vocab.bos, eos
    heads = DraftHeads(model.hidden_size, model.vocab_size, 3)

    def certain_of(token: int, margin: float) -> DraftHeads:
        with torch.no_grad():
            for head in heads.heads:
                head[-1].weight.zero_()
                head[-1].bias.fill_(-margin / 2)
                head[-1].bias[token] = margin / 2
        return heads

    certain = distill_heads.heads_acceptance(model, certain_of(7, 200.0), [rows], eos, branches=("sample", "top"))
    sampled, top = certain["sample"], certain["top"]
    assert top["per_head"] == pytest.approx(sampled["per_head"], abs=1e-5)
    unsure = distill_heads.heads_acceptance(model, certain_of(7, 0.5), [rows], eos, branches=("top",))["top"]
    assert unsure["per_head"] == pytest.approx(top["per_head"], abs=1e-6)


def test_wider_heads_warm_started_from_trained_ones_start_at_their_acceptance(model_dir, tmp_path, capsys):
    """``--init`` with more ``--layers`` than the heads have: the new blocks start as the identity, so the run's
    "before" figure is the trained heads' own."""
    args = ["--model", str(model_dir), "--init", str(model_dir), "--heads", "3", "--batch-size", "2", "--eval-shapes", "2"]
    distill_heads.main(args + ["--eval-only"])
    own = capsys.readouterr().out.split("before: ")[1].splitlines()[0]
    distill_heads.main(args + ["--layers", "2", "--minutes", "0.3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "the 1 new ones start as the identity" in out
    assert out.split("before: ")[1].splitlines()[0] == own
    state = load_file(str(tmp_path / "heads.safetensors"))
    assert "heads.0.1.linear.weight" in state and "heads.0.2.weight" in state


def test_fewer_layers_than_the_init_heads_is_refused_by_name(model_dir, tmp_path):
    wide = tmp_path / "wide"
    distill_heads.main(["--model", str(model_dir), "--init", str(model_dir), "--heads", "3", "--layers", "2",
                        "--minutes", "0.3", "--batch-size", "2", "--eval-shapes", "2", "--out", str(wide)])
    with pytest.raises(SystemExit, match="--layers 1"):
        distill_heads.main(["--model", str(model_dir), "--init", str(wide), "--heads", "3", "--layers", "1",
                            "--eval-only", "--eval-shapes", "2"])


def test_a_budget_too_short_for_a_batch_writes_nothing(model_dir, tmp_path):
    with pytest.raises(SystemExit, match="--minutes 0.01 left no time"):
        distill_heads.main(["--model", str(model_dir), "--init", str(model_dir), "--heads", "3", "--minutes", "0.01",
                            "--batch-size", "2", "--eval-shapes", "2", "--out", str(tmp_path)])
    assert not (tmp_path / "heads.safetensors").exists()
