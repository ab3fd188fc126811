"""Moshi (``MoshiForConditionalGeneration``) on a tiny random config through the depth-transformer layout: our AR
equals the class's own greedy ``generate`` (text stream and Moshi's audio codebooks, the delay pattern's pinned
first step included), and every lossless method equals our AR at batch 2 with prompts of different lengths."""

import pytest
import torch
from transformers.utils import logging as hf_logging

from mmaccel.audio.moshi import MoshiPrompt, MoshiStreams, moshi_delays, tiny_moshi
from mmaccel.audio.musicgen import undelay
from mmaccel.depth_streams import DepthStreamDecoder
from mmaccel.sampling import SamplingConfig
from mmaccel.streams import FrameJacobiDrafter

GREEDY = SamplingConfig(temperature=0.0)
K, STEPS = 3, [5, 3]


@pytest.fixture(scope="module")
def moshi():
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    yield tiny_moshi(codebooks=K, vocab=16, text_vocab=40)
    hf_logging.set_verbosity(level)


def prompt():
    g = torch.Generator().manual_seed(1)
    t = max(STEPS)
    ids = torch.randint(0, 40, (2, t), generator=g)
    moshi_codes = torch.randint(0, 16, (2, K, t), generator=g)
    user_codes = torch.randint(0, 16, (2, K, t), generator=g)
    return MoshiPrompt(ids, moshi_codes, user_codes, torch.tensor(STEPS))


def test_moshi_ar_is_generate(moshi):
    frames, p = 10, prompt()
    ours = DepthStreamDecoder(MoshiStreams(moshi), None, "exact", GREEDY).generate(p, frames)
    for b, n in enumerate(STEPS):
        out = moshi.generate(
            input_ids=p.input_ids[b : b + 1, :n],
            user_audio_codes=p.user_audio_codes[b : b + 1, :, :n],
            moshi_audio_codes=p.moshi_audio_codes[b : b + 1, :, :n],
            do_sample=False,
            depth_decoder_do_sample=False,
            max_new_tokens=frames,
            return_audio_waveforms=False,
            return_audio_codes=True,
            return_dict_in_generate=True,
        )
        start = n + 1  # the class puts one unconditional step before the prompt
        text = out.sequences[0, start:]
        audio = moshi.generated_audio_codes[0, :, start:].T  # the codes the backbone read, delay pattern applied
        theirs = torch.cat([text[:, None], audio], 1)
        assert torch.equal(ours.tokens[b], theirs)
        # the first step's delayed codebooks are the prompt's last codes, as the delay pattern pins them
        assert torch.equal(ours.tokens[b, 0, 2:], p.moshi_audio_codes[b, 1:, n - 1])


@pytest.mark.parametrize("rule, init, window", [("greedy", "repeat", 4), ("exact", "random", 3), ("sjd", "repeat", 6)])
def test_moshi_lossless_methods(moshi, rule, init, window):
    model = MoshiStreams(moshi)
    ar = DepthStreamDecoder(model, None, "exact", GREEDY).generate(prompt(), 14)
    spec = DepthStreamDecoder(model, FrameJacobiDrafter(window, init), rule, GREEDY).generate(prompt(), 14)
    assert torch.equal(ar.tokens, spec.tokens) and spec.stats.nfe <= ar.stats.nfe


def test_moshi_depth_verify_accepts_and_rejects(moshi, known_future_drafter):
    """Partly right drafts: several frames a backbone forward, text and audio streams still exactly AR's."""
    model = MoshiStreams(moshi)
    ar = DepthStreamDecoder(model, None, "exact", GREEDY).generate(prompt(), 18)
    spec = DepthStreamDecoder(model, known_future_drafter(5, ar.tokens), "exact", GREEDY).generate(prompt(), 18)
    assert torch.equal(ar.tokens, spec.tokens)
    assert spec.stats.nfe <= ar.stats.nfe // 2 and bool(spec.stats.from_draft.any())


def test_moshi_audio_and_bad_prompts(moshi):
    model = MoshiStreams(moshi)
    out = DepthStreamDecoder(model, None, "exact", GREEDY).generate(prompt(), 8)
    frames = torch.stack([undelay(t, 7, moshi_delays(K)) for t in out.tokens])
    assert model.decode_audio(frames).shape[:2] == (2, 1)
    bad = prompt()
    bad.user_audio_codes = bad.user_audio_codes[:, :2]
    with pytest.raises(ValueError, match="user_audio_codes"):
        DepthStreamDecoder(model).generate(bad, 4)
    bad = prompt()
    bad.input_ids[0, 0] = 99
    with pytest.raises(ValueError, match="input_ids"):
        DepthStreamDecoder(model).generate(bad, 4)
