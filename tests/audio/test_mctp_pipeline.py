"""Method ``mctp`` of the speech pipeline: MCTP heads on the shipped LM verified by a core rule. Greedy output under
lossless rules is AR's at batch 2 in fewer or as many forwards; relaxed rules run; the heads load from the model
folder (the shipped ones load by default and save forwards under greedy decoding); a model without heads, an unknown
rule and an unknown parameter are errors naming them."""

import shutil

import pytest
import torch

from mmaccel.audio.pipeline import WEIGHTS, SpeechARPipeline
from mmaccel.stream_heads import FrameHeads, save_frame_heads

TEXTS = ["the red square is left of the star", "the blue ring is under the cube"]


def output_layer_heads(pipe, num_heads=3):
    """Heads copied from the LM's output layer, nudged so that the heads differ from each other."""
    streams = pipe.lm.streams
    heads = FrameHeads(streams.model.config.hidden_size, streams.num_streams, streams.vocab_size, num_heads)
    heads.heads.init_from_output(torch.cat([head.weight for head in streams.model.lm_heads]))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return heads.eval()


@pytest.fixture(scope="module")
def pipe():
    pipe = SpeechARPipeline.from_pretrained()
    pipe.heads = output_layer_heads(pipe)
    return pipe


@pytest.mark.parametrize(
    "spec", ["mctp", "mctp:rule=exact", "mctp:rule=greedy", "mctp:tail=3", "mctp:tail=2:tail_from=repeat"]
)
def test_mctp_greedy_is_ar(pipe, spec):
    ar = pipe(TEXTS, "m1", "ar", temperature=0.0, max_steps=40)
    other = pipe(TEXTS, "m1", spec, temperature=0.0, max_steps=40)
    for a, b in zip(ar.tokens, other.tokens):
        assert torch.equal(a, b)
    assert other.stats.nfe <= ar.stats.nfe


def test_mctp_relaxed_rule_runs(pipe):
    out = pipe(TEXTS, "m1", "mctp:rule=lantern", seeds=[0, 1], max_steps=30)
    assert all(t.shape[1] == 4 and len(t) > 0 for t in out.tokens)
    assert pipe.decoder("mctp:rule=lantern").drafter.window == pipe.heads.num_heads
    assert pipe.decoder("mctp:rule=lantern:tail=4").drafter.window == pipe.heads.num_heads + 4


def test_heads_load_from_the_model_folder(pipe, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(WEIGHTS, folder, ignore=shutil.ignore_patterns("heads*"))
    assert SpeechARPipeline.from_pretrained(folder).heads is None
    save_frame_heads(pipe.heads, folder)
    loaded = SpeechARPipeline.from_pretrained(folder).heads
    for (name, a), (_, b) in zip(pipe.heads.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mctp:rule=nope", "nope"),
        ("mctp:window=4", "unknown parameter"),
        ("mctp:rule=lantern:delta=x", "delta"),
        ("mctp:tail=-1", "tail"),
        ("mctp:tail=2:tail_from=copy", "tail_from"),
    ],
)
def test_bad_mctp_specs(pipe, spec, message):
    with pytest.raises(ValueError, match=message):
        pipe.decoder(spec)


def test_mctp_needs_heads(pipe):
    bare = SpeechARPipeline(pipe.lm, pipe.codec, pipe.lexicon)
    with pytest.raises(ValueError, match="needs MCTP heads"):
        bare.decoder("mctp")


def test_shipped_heads_load_and_stay_lossless():
    shipped = SpeechARPipeline.from_pretrained()
    assert shipped.heads is not None and shipped.heads.num_heads == 4
    ar = shipped(TEXTS, "m1", "ar", temperature=0.0, max_steps=40)
    heads = shipped(TEXTS, "m1", "mctp", temperature=0.0, max_steps=40)
    assert all(torch.equal(a, b) for a, b in zip(ar.tokens, heads.tokens)) and heads.stats.nfe < ar.stats.nfe
