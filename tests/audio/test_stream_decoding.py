"""Multi-codebook speculation on a tiny random MusicgenForCausalLM (delay pattern): greedy output is AR's."""

import pytest
import torch
from torch import nn

from mmaccel.acceptance import make_rule
from mmaccel.audio.musicgen import MusicgenStreams, SpeechPrompt, delay_steps, tiny_musicgen, undelay
from mmaccel.sampling import SamplingConfig
from mmaccel.streams import FrameJacobiDrafter, StreamDecoder, accept_steps
from mmaccel.window import AutoWindow


def streams(stop=None, seed=0):
    model = tiny_musicgen(codebooks=3, vocab=16, hidden=32, layers=2, seed=seed)
    torch.manual_seed(seed + 1)
    return MusicgenStreams(model, nn.Embedding(10, 32), stop_token=stop)


def prompt():
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]])  # different lengths, right-padded
    return SpeechPrompt(ids, torch.tensor([5, 2]))


def test_delay_round_trip():
    codes = torch.randint(0, 8, (7, 4))
    steps = delay_steps(codes, stop=8)
    assert steps.shape == (11, 4)
    assert steps[0, 1] == -100 and steps[7, 0] == 8 and steps[10, 3] == 8
    assert torch.equal(undelay(steps, 7), codes)


@pytest.mark.parametrize(
    "method",
    [("greedy", "repeat", 4), ("exact", "random", 3), ("sjd", "repeat", 6), ("sjd", "sample", 5), ("exact", "mix", 4)],
)
def test_greedy_identity(method):
    rule, init, window = method
    greedy = SamplingConfig(temperature=0.0)
    model = streams()
    ar = StreamDecoder(model, None, "exact", greedy).generate(prompt(), 20)
    spec = StreamDecoder(model, FrameJacobiDrafter(window, init), rule, greedy).generate(prompt(), 20)
    assert torch.equal(ar.tokens, spec.tokens)
    assert spec.stats.nfe <= ar.stats.nfe
    # a sample alone decodes as in the batch
    alone = StreamDecoder(model, FrameJacobiDrafter(window, init), rule, greedy).generate(
        SpeechPrompt(prompt().ids[1:, :2], torch.tensor([2])), 20, seeds=[1]
    )
    assert torch.equal(alone.tokens[0], ar.tokens[1])


def test_mc_sjd_greedy_identity():
    greedy = SamplingConfig(temperature=0.0)
    model = streams()
    ar = StreamDecoder(model, None, "exact", greedy).generate(prompt(), 20)
    mc = StreamDecoder(model, FrameJacobiDrafter(5, coupling="maximal"), "sjd", greedy).generate(prompt(), 20)
    assert torch.equal(ar.tokens, mc.tokens) and mc.stats.nfe <= ar.stats.nfe
    with pytest.raises(ValueError, match="coupling"):
        FrameJacobiDrafter(4, coupling="gumbel")


@pytest.mark.parametrize("costs", [{1: 1.0, 2: 1.05, 4: 1.1}, {1: 5.0, 2: 9.0, 4: 20.0}])
def test_auto_window_greedy_identity(costs):
    """window='auto' with a fixed cost table: cheap windows are used and may change, dear ones give way to AR;
    greedy output is AR's either way."""
    greedy = SamplingConfig(temperature=0.0)
    model = streams()
    ar = StreamDecoder(model, None, "exact", greedy).generate(prompt(), 40)
    auto = AutoWindow(costs=costs, windows=(1, 2, 4), interval=2)
    spec = StreamDecoder(model, FrameJacobiDrafter(4), "sjd", greedy, auto=auto).generate(prompt(), 40)
    assert torch.equal(ar.tokens, spec.tokens)
    assert spec.stats.nfe <= ar.stats.nfe + 1


def test_auto_window_measures_costs():
    model = streams()
    auto = AutoWindow(windows=(1, 2), interval=2)
    out = StreamDecoder(model, FrameJacobiDrafter(2), "sjd", SamplingConfig(temperature=0.0), auto=auto).generate(
        prompt(), 12
    )
    assert out.tokens.shape == (2, 12, 3)


def test_stop_token_ends_each_sample():
    model = streams(stop=3)
    greedy = SamplingConfig(temperature=0.0)
    ar = StreamDecoder(model, None, "exact", SamplingConfig()).generate(prompt(), 40, seeds=[0, 1])
    spec = StreamDecoder(model, FrameJacobiDrafter(4), "exact", SamplingConfig()).generate(prompt(), 40, seeds=[0, 1])
    for out in (ar, spec):
        for b, n in enumerate(out.stats.lengths.tolist()):
            hits = (out.tokens[b, :n, 0] == 3).nonzero()
            if n < 40:
                assert len(hits) and n == int(hits[0]) + 1 + model.stop_lag
    del greedy


def test_accept_steps_min_over_streams():
    # stream 0 accepts 2 drafts, stream 1 accepts 0: one step committed, stream 0 keeps its draft there
    v = 5
    drafts = torch.tensor([[[1, 2], [3, 4], [0, 0]]])  # [B=1, L=3, K=2]
    p = torch.zeros(1, 4, 2, v)
    p[0, 0, 0, 1] = p[0, 1, 0, 3] = p[0, 2, 0, 1] = p[0, 3, 0, 0] = 1
    p[0, :, 1, 0] = 1  # stream 1 wants token 0 everywhere
    q = torch.nn.functional.one_hot(drafts, v).float()
    n, nxt, kept = accept_steps([make_rule("greedy")], p, q, drafts, torch.rand(1, 2, 4))
    assert n.tolist() == [0] and nxt.tolist() == [[1, 0]] and kept.tolist() == [[True, False]]
