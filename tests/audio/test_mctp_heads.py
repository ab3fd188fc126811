"""MCTP heads (VITA-Audio style, verified) drafting codec streams on a tiny random MusicgenForCausalLM: greedy output
is AR's at batch 2 with prompts of different lengths; heads that match a context-free model commit whole windows;
under sampling the output is AR's (chi-square over 20k draws) and heads claiming a q they did not draw from are
caught; the distillation loss reaches the heads only."""

import pytest
import torch
from torch import nn

from mmaccel.audio.musicgen import MusicgenStreams, SpeechPrompt, tiny_musicgen
from mmaccel.sampling import SamplingConfig
from mmaccel.stream_heads import FrameHeads, FrameHeadsDrafter, frame_heads_loss
from mmaccel.streams import StreamDecoder
from mmaccel.window import AutoWindow

GREEDY = SamplingConfig(temperature=0.0)


def streams(vocab=16, codebooks=3, seed=0):
    model = tiny_musicgen(codebooks=codebooks, vocab=vocab, hidden=32, layers=2, seed=seed)
    torch.manual_seed(seed + 1)
    return MusicgenStreams(model, nn.Embedding(10, 32))


def prompt():
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]])  # different lengths, right-padded
    return SpeechPrompt(ids, torch.tensor([5, 2]))


def heads_for(model, num_heads=3, seed=5, hinted=False):
    torch.manual_seed(seed)
    heads = FrameHeads(32, model.num_streams, model.vocab_size, num_heads, hinted=hinted)
    with torch.no_grad():  # random (not identity-initialised) heads, so that drafts vary
        for p in heads.parameters():
            p.normal_(0, 0.5)
    return heads


@pytest.mark.parametrize("branch", ["sample", "top"])
@pytest.mark.parametrize("hinted", [False, True])
@pytest.mark.parametrize("rule", ["greedy", "exact", "sjd"])
def test_heads_greedy_identity(rule, hinted, branch):
    model = streams()
    ar = StreamDecoder(model, None, "exact", GREEDY).generate(prompt(), 20)
    heads = heads_for(model, hinted=hinted)
    spec = StreamDecoder(model, FrameHeadsDrafter(heads, branch=branch), rule, GREEDY).generate(prompt(), 20)
    assert torch.equal(ar.tokens, spec.tokens) and spec.stats.nfe <= ar.stats.nfe


def test_matching_heads_commit_whole_windows():
    """A context-free model (zero output weights: every codebook uniform) and heads that say so: every draft is
    accepted, so each forward commits the window and one more step."""
    model = streams()
    with torch.no_grad():
        for head in model.model.lm_heads:
            head.weight.zero_()
    heads = heads_for(model)
    with torch.no_grad():
        for p in heads.parameters():
            p.zero_()
    out = StreamDecoder(model, FrameHeadsDrafter(heads), "sjd").generate(prompt(), 17, seeds=[0, 1])
    assert out.stats.nfe == 1 + 16 // (heads.num_heads + 1)
    assert bool(out.stats.from_draft.any())


def test_heads_refuse_a_model_of_another_shape_and_auto():
    model = streams()
    wrong = FrameHeads(32, model.num_streams, model.vocab_size + 1, 2)
    with pytest.raises(ValueError, match="codebooks x"):
        StreamDecoder(model, FrameHeadsDrafter(wrong), "sjd").generate(prompt(), 6)
    with pytest.raises(ValueError, match="auto"):
        StreamDecoder(model, FrameHeadsDrafter(heads_for(model)), "sjd", auto=AutoWindow())


def test_hinted_heads_read_the_step_just_committed():
    """A hinted head's drafts change with the committed step and not otherwise: its logits for two states that
    differ only in the last frame differ; distillation reaches the hint embedding."""
    model = streams()
    heads = heads_for(model, hinted=True)
    hidden = torch.randn(1, 32).expand(2, 32)
    frame = torch.tensor([[1, 2, 3], [1, 2, 4]])
    logits = heads(hidden, frame)
    assert logits.shape == (2, 3, model.num_streams, model.vocab_size)
    assert not torch.allclose(logits[0], logits[1])
    assert torch.allclose(heads(hidden, frame[:1].expand(2, 3))[0], logits[0])
    steps = StreamDecoder(model, None, "exact", GREEDY).generate(prompt(), 9).tokens
    frame_heads_loss(model, heads, steps, prompt()).backward()
    assert heads.heads.hint.weight.grad is not None and heads.heads.hint.weight.grad.abs().sum() > 0


def test_distillation_loss_reaches_the_heads_only():
    model = streams()
    heads = heads_for(model)
    steps = StreamDecoder(model, None, "exact", GREEDY).generate(prompt(), 9).tokens
    loss = frame_heads_loss(model, heads, steps, prompt())
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert all(p.grad is not None for p in heads.parameters())
    assert all(p.grad is None for p in model.model.parameters())
    with pytest.raises(ValueError, match="num_heads"):
        frame_heads_loss(model, heads, steps[:, :3], prompt())


N, STEPS = 20000, 4


def draws(model, drafter):
    p = SpeechPrompt(torch.tensor([[1, 2]]).expand(N, 2), torch.full((N,), 2))
    t = StreamDecoder(model, drafter, "sjd" if drafter else "exact").generate(p, STEPS, seeds=list(range(N))).tokens
    t = t[:, 1:STEPS]  # steps 1..3 (step 0's codebook 1 is forced by the delay pattern)
    return (t.reshape(N, -1) * torch.tensor([3**i for i in range(t[0].numel())])).sum(1).numpy()


@pytest.mark.slow
def test_heads_sampling_matches_ar_and_a_false_q_is_caught(monkeypatch, two_sample_pvalue):
    model = streams(vocab=3, codebooks=2, seed=3)
    with torch.no_grad():  # peaked logits, and heads near them, so that drafts are accepted often
        for head in model.model.lm_heads:
            head.weight.mul_(8.0)
    heads = heads_for(model, num_heads=2)
    ar = draws(model, None)
    assert two_sample_pvalue(ar, draws(model, FrameHeadsDrafter(heads))) > 1e-3
    hinted = heads_for(model, num_heads=2, hinted=True)  # the heads also read the step just committed
    assert two_sample_pvalue(ar, draws(model, FrameHeadsDrafter(hinted))) > 1e-3
    top = FrameHeadsDrafter(heads, branch="top")  # each head's most likely token, one-hot q
    assert two_sample_pvalue(ar, draws(model, top)) > 1e-3
    one = heads_for(model, num_heads=1)  # one head, then a tail step past it (repeated, or drawn from its q)
    for tail_from in ("repeat", "head"):
        assert two_sample_pvalue(ar, draws(model, FrameHeadsDrafter(one, tail=1, tail_from=tail_from))) > 1e-3
    real = FrameHeadsDrafter._draw

    def false_q(self, state):  # the drafts as drawn, but q claimed uniform
        real(self, state)
        self.q = torch.full_like(self.q, 1.0 / self.q.shape[-1])

    monkeypatch.setattr(FrameHeadsDrafter, "_draw", false_q)
    assert two_sample_pvalue(ar, draws(model, FrameHeadsDrafter(heads))) < 1e-6


def test_top_drafts_are_each_heads_most_likely_token_with_a_one_hot_q():
    model = streams()
    heads = heads_for(model)
    out = StreamDecoder(model, FrameHeadsDrafter(heads, branch="top"), "sjd", SamplingConfig(1.0))
    drafter = out.drafter
    out.generate(prompt(), 6, seeds=[0, 1])
    assert torch.equal(drafter.q.argmax(-1), drafter.tokens)
    assert torch.equal(drafter.q.amax(-1), torch.ones_like(drafter.q.amax(-1)))
    with pytest.raises(ValueError, match="branch"):
        FrameHeadsDrafter(heads, branch="best")


def test_hinted_heads_save_and_load_as_hinted(tmp_path):
    from mmaccel.stream_heads import load_frame_heads, save_frame_heads

    model = streams()
    heads = heads_for(model, hinted=True)
    save_frame_heads(heads, tmp_path)
    loaded = load_frame_heads(tmp_path)
    assert loaded.hinted
    hidden, frame = torch.randn(2, 32), torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert torch.equal(loaded(hidden, frame), heads.eval()(hidden, frame))
