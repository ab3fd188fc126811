"""Under sampling, the depth-transformer layout's speculation (CSM, frames verified by sample-and-match) draws what
AR draws: a chi-square over 20k samples, with a broken verifier (a frame accepted when its codebook 0 matches,
the depth codebooks unchecked) as the control the test must catch."""

import pytest
import torch
from transformers.utils import logging as hf_logging

import mmaccel.depth_streams as depth_module
from mmaccel.audio.csm import CsmStreams, TokenIdsPrompt, tiny_csm
from mmaccel.depth_streams import DepthStreamDecoder
from mmaccel.streams import FrameJacobiDrafter

N, FRAMES = 20000, 3


@pytest.fixture(scope="module")
def model():
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    csm = tiny_csm(codebooks=2, vocab=4, seed=1)
    hf_logging.set_verbosity(level)
    with torch.no_grad():  # peaked distributions: drafts survive often, so acceptance is exercised
        csm.lm_head.weight.mul_(6.0)
        csm.depth_decoder.codebooks_head.weight.mul_(6.0)
    return CsmStreams(csm, stop=False)


def draws(decoder):
    prompt = TokenIdsPrompt(torch.tensor([[3, 4, 5]]).expand(N, 3), torch.full((N,), 3))
    t = decoder.generate(prompt, FRAMES, seeds=list(range(N))).tokens[:, 1:FRAMES]  # frames 1.. (0 is the prefill's)
    return (t.reshape(N, -1) * torch.tensor([4**i for i in range(t[0].numel())])).sum(1).numpy()


@pytest.mark.slow
def test_depth_speculation_matches_ar_and_a_lax_verifier_is_caught(model, monkeypatch, two_sample_pvalue):
    ar = draws(DepthStreamDecoder(model, None))
    spec = draws(DepthStreamDecoder(model, FrameJacobiDrafter(2, "repeat")))
    assert two_sample_pvalue(ar, spec) > 1e-3
    real = DepthStreamDecoder._frames

    def lax(self, out, rng):  # codebook 0 decides: the depth codebooks of a matching draft are kept unchecked
        frames = real(self, out, rng)
        drafts = getattr(self.drafter, "tokens", None)
        if drafts is None or frames.shape[1] == 1:  # the prefill: no drafts yet
            return frames
        w = drafts.shape[1]
        same_first = frames[:, :w, 0] == drafts[..., 0]
        frames[:, :w] = torch.where(same_first[..., None], drafts, frames[:, :w])
        return frames

    monkeypatch.setattr(depth_module.DepthStreamDecoder, "_frames", lax)
    bad = draws(DepthStreamDecoder(model, FrameJacobiDrafter(2, "repeat")))
    assert two_sample_pvalue(ar, bad) < 1e-6
