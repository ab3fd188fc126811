"""Real families (MusicGen, CSM, Dia) on tiny random configs of their transformers classes: our AR equals the
class's own greedy ``generate``, and every lossless method equals our AR, at batch 2 with prompts of different
lengths."""

import pytest
import torch
from transformers.utils import logging as hf_logging

from mmaccel.audio.csm import CsmStreams, TokenIdsPrompt, tiny_csm
from mmaccel.audio.dia import DiaStreams, tiny_dia
from mmaccel.audio.musicgen import undelay
from mmaccel.audio.musicgen_text import MusicgenTextStreams, TextPrompt, tiny_musicgen_text
from mmaccel.depth_streams import DepthStreamDecoder
from mmaccel.sampling import SamplingConfig
from mmaccel.streams import FrameJacobiDrafter, StreamDecoder

GREEDY = SamplingConfig(temperature=0.0)
LOSSLESS = [("greedy", "repeat", 4), ("exact", "random", 3), ("sjd", "repeat", 6)]


@pytest.fixture(scope="module", autouse=True)
def quiet():
    # tiny configs put MusicGen's pad/bos id one past the codebook vocabulary, as the real checkpoints do
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    yield
    hf_logging.set_verbosity(level)


@pytest.fixture(scope="module")
def musicgen():
    return tiny_musicgen_text(codebooks=3, vocab=16)


def text_prompt():
    ids = torch.tensor([[3, 4, 5, 6, 1], [7, 8, 1, 0, 0]])
    return TextPrompt(ids, (torch.arange(5) < torch.tensor([5, 3])[:, None]).long())


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_musicgen_ar_is_generate(musicgen, guidance):
    steps, k = 12, 3
    prompt = text_prompt()
    # the class's own greedy generate; its last K - 1 steps are forced to pad by the end of the delay pattern
    out = musicgen.generate(
        input_ids=prompt.ids,
        attention_mask=prompt.mask,
        do_sample=False,
        guidance_scale=guidance,
        max_new_tokens=steps + k,
        return_dict_in_generate=True,
        output_scores=True,
    )
    theirs = torch.stack([s.argmax(-1).view(2, k) for s in out.scores], 1)[:, :steps]
    model = MusicgenTextStreams(musicgen, guidance_scale=guidance)
    ours = StreamDecoder(model, None, "exact", GREEDY).generate(prompt, steps)
    forced = model.forced(torch.arange(steps).expand(2, -1))
    assert torch.equal(theirs.masked_fill(forced, 0), ours.tokens)
    wave = model.decode_audio(torch.stack([undelay(t, steps - k + 1) for t in ours.tokens]))
    assert wave.shape[:2] == (2, 1) and wave.shape[2] > 0


@pytest.mark.parametrize("method", LOSSLESS)
def test_musicgen_lossless_methods(musicgen, method):
    rule, init, window = method
    model = MusicgenTextStreams(musicgen, guidance_scale=3.0)
    ar = StreamDecoder(model, None, "exact", GREEDY).generate(text_prompt(), 16)
    spec = StreamDecoder(model, FrameJacobiDrafter(window, init), rule, GREEDY).generate(text_prompt(), 16)
    assert torch.equal(ar.tokens, spec.tokens) and spec.stats.nfe <= ar.stats.nfe


@pytest.fixture(scope="module")
def csm():
    return tiny_csm(codebooks=4, vocab=16)


ROWS = [[3, 4, 5, 6, 7], [8, 9, 2]]


def ids_prompt():
    ids = torch.tensor([r + [0] * (5 - len(r)) for r in ROWS])
    return TokenIdsPrompt(ids, torch.tensor([len(r) for r in ROWS]))


def test_csm_ar_is_generate(csm):
    frames = 12
    theirs = [
        csm.generate(input_ids=torch.tensor([r]), do_sample=False, depth_decoder_do_sample=False, max_new_tokens=frames)
        for r in ROWS
    ]
    ours = DepthStreamDecoder(CsmStreams(csm, stop=False), None, "exact", GREEDY).generate(ids_prompt(), frames)
    for b in range(2):
        assert torch.equal(ours.tokens[b], theirs[b][0])
    assert CsmStreams(csm).decode_audio(ours.tokens).shape[:2] == (2, 1)


@pytest.mark.parametrize("method", LOSSLESS)
def test_csm_lossless_methods(csm, method):
    rule, init, window = method
    model = CsmStreams(csm, stop=False)
    ar = DepthStreamDecoder(model, None, "exact", GREEDY).generate(ids_prompt(), 14)
    spec = DepthStreamDecoder(model, FrameJacobiDrafter(window, init), rule, GREEDY).generate(ids_prompt(), 14)
    assert torch.equal(ar.tokens, spec.tokens) and spec.stats.nfe <= ar.stats.nfe


def test_csm_depth_verify_accepts_and_rejects(csm, known_future_drafter):
    """With drafts that are partly right, a window commits several frames per backbone forward and the output is
    still exactly AR's: the depth decoder runs for every drafted frame after the backbone verify."""
    model = CsmStreams(csm, stop=False)
    ar = DepthStreamDecoder(model, None, "exact", GREEDY).generate(ids_prompt(), 18)
    spec = DepthStreamDecoder(model, known_future_drafter(5, ar.tokens), "exact", GREEDY).generate(ids_prompt(), 18)
    assert torch.equal(ar.tokens, spec.tokens)
    assert spec.stats.nfe <= ar.stats.nfe // 2
    assert bool(spec.stats.from_draft.any())


def test_depth_decoder_refuses_relaxed_rules(csm):
    with pytest.raises(ValueError, match="lantern"):
        DepthStreamDecoder(CsmStreams(csm), FrameJacobiDrafter(4), "lantern")


@pytest.fixture(scope="module")
def dia():
    model = tiny_dia(seed=2)
    with torch.no_grad():  # a stronger EOS row, so that both utterances end inside the tests' length
        model.logits_dense.weight[model.config.decoder_config.eos_token_id] *= 3
    return model


def test_dia_ar_is_generate(dia):
    """Through the end of speech: EOS in codebook 0, each codebook's EOS after its delay, pads after it."""
    steps = 30
    prompt = text_prompt()
    model = DiaStreams(dia, guidance_scale=3.0, guidance_top_k=None)
    theirs = dia.generate(
        input_ids=prompt.ids,
        attention_mask=prompt.mask,
        decoder_input_ids=model.decoder_inputs(2),
        decoder_attention_mask=torch.ones(2, 1 + max(model.delays), dtype=torch.long),
        do_sample=False,
        guidance_scale=3.0,
        top_k=None,
        max_new_tokens=steps + 10,
    )
    ours = StreamDecoder(model, None, "exact", GREEDY).generate(prompt, steps)
    for b, n in enumerate(ours.stats.lengths.tolist()):
        assert n < steps and (ours.tokens[b, :n, 0] == model.eos).any()
        forced = model.forced(torch.arange(n)[None])[0]
        assert torch.equal(theirs[b, 1 : n + 1].masked_fill(forced, 0), ours.tokens[b, :n])


@pytest.mark.parametrize("method", LOSSLESS)
def test_dia_lossless_methods(dia, method):
    rule, init, window = method
    model = DiaStreams(dia, guidance_scale=3.0, guidance_top_k=None)
    ar = StreamDecoder(model, None, "exact", GREEDY).generate(text_prompt(), 30)
    spec = StreamDecoder(model, FrameJacobiDrafter(window, init), rule, GREEDY).generate(text_prompt(), 30)
    assert torch.equal(ar.stats.lengths, spec.stats.lengths) and spec.stats.nfe <= ar.stats.nfe
    for b, n in enumerate(ar.stats.lengths.tolist()):
        assert torch.equal(ar.tokens[b, :n], spec.tokens[b, :n])
