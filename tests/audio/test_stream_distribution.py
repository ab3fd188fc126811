"""Under sampling, SJD and MC-SJD over codec streams draw what AR draws: a chi-square over 20k samples, with a broken
merge (every stream takes its resampled token, kept drafts dropped) as the control the test must catch; the same for
the inits that draw fresh slots from the model's p (a draft that copies while claiming that p is caught)."""

import pytest
import torch
from torch import nn

import mmaccel.streams as streams_module
from mmaccel.audio.musicgen import MusicgenStreams, SpeechPrompt, tiny_musicgen
from mmaccel.streams import FrameJacobiDrafter, StreamDecoder

N, STEPS = 20000, 4


def model():
    m = tiny_musicgen(codebooks=2, vocab=3, hidden=16, layers=1, seed=3)
    with torch.no_grad():  # peaked logits make drafts survive often, so the merge is exercised
        for head in m.lm_heads:
            head.weight.mul_(8.0)
    torch.manual_seed(4)
    return MusicgenStreams(m, nn.Embedding(4, 16))


def draws(decoder):
    prompt = SpeechPrompt(torch.tensor([[1, 2]]).expand(N, 2), torch.full((N,), 2))
    out = decoder.generate(prompt, STEPS, seeds=list(range(N)))
    t = out.tokens[:, 1:STEPS]  # steps 1..3 (step 0's codebook 1 is forced by the delay pattern)
    return (t.reshape(N, -1) * torch.tensor([3**i for i in range(t[0].numel())])).sum(1).numpy()


@pytest.mark.slow
def test_sjd_streams_match_ar_and_a_broken_merge_is_caught(monkeypatch, two_sample_pvalue):
    m = model()
    ar = draws(StreamDecoder(m, None, "exact"))
    sjd = draws(StreamDecoder(m, FrameJacobiDrafter(3, "repeat"), "sjd"))
    assert two_sample_pvalue(ar, sjd) > 1e-3
    mc_sjd = draws(StreamDecoder(m, FrameJacobiDrafter(3, "repeat", coupling="maximal"), "sjd"))
    assert two_sample_pvalue(ar, mc_sjd) > 1e-3
    real = streams_module.accept_steps

    def broken(*args):
        n, _, kept = real(*args)
        rules, p, q, drafts, u = args
        b, l, k = drafts.shape
        verdict = rules[0](
            *(x.transpose(1, 2).reshape(b * k, *x.shape[1:2], *x.shape[3:]) for x in (p, q, drafts)),
            u[..., :l].reshape(b * k, l),
            u[..., l].reshape(-1),
        )
        return n, verdict.next_token.view(b, k), kept

    monkeypatch.setattr(streams_module, "accept_steps", broken)
    bad = draws(StreamDecoder(m, FrameJacobiDrafter(3, "repeat"), "sjd"))
    assert two_sample_pvalue(ar, bad) < 1e-6


@pytest.mark.slow
def test_p_inits_match_ar_and_a_false_q_is_caught(monkeypatch, two_sample_pvalue):
    """Window 1 with MC-SJD: each accepted step leaves the next step a fresh slot, drawn by the init."""
    m = model()
    ar = draws(StreamDecoder(m, None, "exact"))
    for init in ("sample", "mix"):
        spec = draws(StreamDecoder(m, FrameJacobiDrafter(1, init, coupling="maximal"), "sjd"))
        assert two_sample_pvalue(ar, spec) > 1e-3, init
    real = FrameJacobiDrafter._fresh

    def false_q(self, last, n, state, p_last=None):  # copies the last frame but claims the init's q
        _, q = real(self, last, n, state, p_last)
        return last[:, None].expand(-1, n, -1).clone(), q

    monkeypatch.setattr(FrameJacobiDrafter, "_fresh", false_q)
    bad = draws(StreamDecoder(m, FrameJacobiDrafter(1, "sample", coupling="maximal"), "sjd"))
    assert two_sample_pvalue(ar, bad) < 1e-6
