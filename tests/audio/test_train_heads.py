"""train_heads on a tiny speech LM: a few steps write heads that load, whose held-out acceptance is the one the run
recorded; on a context-free LM heads copied from its output layer are accepted with probability 1; bad arguments
are errors naming the flag and write nothing."""

import json
from pathlib import Path

import pytest
import torch

from mmaccel.audio.musicgen import tiny_musicgen
from mmaccel.audio.speech_lm import SpeechLM, symbols_for
from mmaccel.audio.training import train_heads
from mmaccel.audio.training.train_lm import save_lm
from mmaccel.stream_heads import FrameHeads, frame_heads_acceptance, load_frame_heads

LEXICON = json.loads((Path(__file__).resolve().parents[2] / "audio" / "weights" / "lexicon.json").read_text())


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_lm")
    musicgen = tiny_musicgen(codebooks=2, vocab=9, hidden=32, layers=1, seed=0)
    with torch.no_grad():  # peaked distributions, and no stop: hidden unit 0 is a constant 10, the stop's logit -100
        norm = musicgen.model.decoder.layer_norm
        norm.weight[0], norm.bias[0] = 0.0, 10.0
        for head in musicgen.lm_heads:
            head.weight.mul_(3.0)
            head.weight[:, 0] = 0.0
        musicgen.lm_heads[0].weight[-1, 0] = -10.0
    lm = SpeechLM(musicgen, symbols_for(LEXICON), ["m1", "f1"], max_steps=64)
    save_lm(lm, folder, LEXICON, {})
    return folder


def run_args(folder, out):
    return ["--model", str(folder), "--out", str(out), "--max-steps", "3", "--batch", "2", "--steps", "14"]


def test_train_heads_writes_heads_that_reproduce_the_recorded_acceptance(tiny_lm, tmp_path, capsys):
    train_heads.main([*run_args(tiny_lm, tmp_path), "--heads", "2", "--eval-utterances", "3", "--minutes", "2"])
    printed = capsys.readouterr().out
    assert "before: held-out frame acceptance" in printed and "after:" in printed
    record = json.loads((tmp_path / "heads_train.json").read_text())
    assert record["steps"] == 3 and record["first_loss"] > 0
    heads = load_frame_heads(tmp_path)
    assert heads.num_heads == 2 and (heads.num_streams, heads.vocab_size) == (2, 9)
    lm = SpeechLM.from_pretrained(tiny_lm)
    held_out = []  # the run's held-out samples, drawn again from the same seeds
    for i in range(0, 3, 2):
        n = min(2, 3 - i)
        prompt = train_heads.prompts(lm, LEXICON, train_heads.HEADS_VAL_SEED, i, n)
        seeds = [10_000 + i + r for r in range(n)]
        held_out.append(train_heads.sampled_steps(lm, prompt, 14, 1.0, seeds, 2 + 2 + 2))
    again = train_heads.acceptance_figures(lm, heads, held_out, 1.0)
    assert again["per_head"] == pytest.approx(record["acceptance_after"]["per_head"], abs=1e-6)
    assert record["acceptance_after"]["per_head"] != record["acceptance_before"]["per_head"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_output_layer_copies_are_exact_on_a_context_free_lm(tiny_lm):
    """The LM's output layer zeroed (every distribution uniform whatever the context): heads copied from it draft
    exactly the LM's distributions, so every frame is accepted with probability 1."""
    lm = SpeechLM.from_pretrained(tiny_lm)
    with torch.no_grad():
        for head in lm.musicgen.lm_heads:
            head.weight.zero_()
    heads = FrameHeads(32, 2, 9, 2)
    heads.heads.init_from_output(torch.cat([head.weight for head in lm.musicgen.lm_heads]))
    prompt = train_heads.prompts(lm, LEXICON, train_heads.HEADS_VAL_SEED, 0, 2)
    tokens = torch.randint(0, 8, (2, 12, 2), generator=torch.Generator().manual_seed(0))
    frame, per_book = frame_heads_acceptance(lm.streams, heads, tokens, prompt)
    assert torch.allclose(frame, torch.ones_like(frame)) and per_book.shape[1:] == (2, 2)


@pytest.mark.parametrize(
    "extra, message",
    [(["--lr", "0"], "--lr must be > 0"), (["--heads", "0"], "--heads must be >= 1"), (["--eval-only"], "--init")],
)
def test_bad_arguments_name_the_flag(tiny_lm, tmp_path, extra, message):
    with pytest.raises(SystemExit, match=message):
        train_heads.main([*run_args(tiny_lm, tmp_path), *extra])
    assert not list(tmp_path.iterdir())


def test_wider_heads_from_trained_ones_start_at_their_acceptance(tiny_lm, tmp_path, capsys):
    """``--init`` with more ``--layers``: the new residual blocks start as the identity, so the held-out acceptance
    before training is the trained heads' own; fewer layers than the heads have are refused by name."""
    first = tmp_path / "first"
    train_heads.main([*run_args(tiny_lm, first), "--heads", "2", "--eval-utterances", "3", "--minutes", "2"])
    trained = json.loads((first / "heads_train.json").read_text())["acceptance_after"]["per_head"]
    capsys.readouterr()
    wide = tmp_path / "wide"
    train_heads.main([*run_args(tiny_lm, wide), "--init", str(first), "--layers", "2", "--eval-utterances", "3",
                      "--minutes", "2"])
    assert "the 1 new ones start as the identity" in capsys.readouterr().out
    record = json.loads((wide / "heads_train.json").read_text())
    assert record["acceptance_before"]["per_head"] == pytest.approx(trained, abs=1e-6)
    assert load_frame_heads(wide).heads.heads[0][1].linear.weight.shape == (32, 32)
    with pytest.raises(SystemExit, match="--layers 1"):
        train_heads.main([*run_args(tiny_lm, tmp_path / "narrow"), "--init", str(wide), "--layers", "1",
                          "--eval-utterances", "3", "--minutes", "2"])
    assert not (tmp_path / "narrow").exists()
