"""Finished samples leave the batch without changing a token or a statistic."""

import pytest
import torch

from mmaccel import (
    CFGModel,
    DraftModelDrafter,
    GuidedPrompt,
    JacobiDrafter,
    MultiHeadDrafter,
    SamplingConfig,
    SpeculativeDecoder,
    TokenPrompt,
)
from mmaccel.drafting import DraftHeads
from mmaccel.engine import commit  # noqa: F401  (the bookkeeping retirement must keep intact)

COND = [[1, 2, 3, 4], [5, 6], [7, 8, 9], [10], [11, 12, 13, 14, 15]]
UNCOND = [[0], [0, 0, 0], [0, 0], [0], [0]]


def drafter_for(kind, target, small_draft, guided):
    if kind == "jacobi":
        return JacobiDrafter(window=4)
    if kind == "draft":
        return DraftModelDrafter(CFGModel(small_draft, 2.0) if guided else small_draft, window=3)
    torch.manual_seed(0)
    heads = DraftHeads(target.model.config.hidden_size, target.vocab_size, num_heads=3)
    heads.init_from_output(target.model.get_output_embeddings().weight)
    return MultiHeadDrafter(heads)


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("kind", ["jacobi", "draft", "heads"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_retiring_finished_samples_changes_no_token_and_no_stat(target, small_draft, kind, guided, temperature):
    prompt = TokenPrompt.from_lists(COND)
    model = target
    if guided:
        prompt, model = GuidedPrompt(prompt, TokenPrompt.from_lists(UNCOND)), CFGModel(target, 2.0)
    outs = []
    for retire_below in (0.0, 1.0):  # never, and as soon as any sample finishes
        decoder = SpeculativeDecoder(
            model,
            drafter_for(kind, target, small_draft, guided),
            rule="sjd" if kind == "jacobi" else "exact",
            sampling=SamplingConfig(temperature=temperature),
            retire_below=retire_below,
        )
        outs.append(decoder.generate(prompt, 24, seeds=[3, 1, 4, 1, 5]))
    kept, retired = outs
    # The samples did finish at different forwards, so rows really left the batch.
    assert len(set(retired.stats.steps_per_sample.tolist())) > 1
    assert torch.equal(kept.tokens, retired.tokens)
    assert torch.equal(kept.stats.accept_step, retired.stats.accept_step)
    assert torch.equal(kept.stats.steps_per_sample, retired.stats.steps_per_sample)
    assert kept.stats.nfe == retired.stats.nfe and kept.stats.draft_nfe == retired.stats.draft_nfe
    assert len(kept.stats.tokens_per_step) == len(retired.stats.tokens_per_step)
    for a, b in zip(kept.stats.tokens_per_step, retired.stats.tokens_per_step):
        assert torch.equal(a, b)


def test_retire_below_is_checked(target):
    with pytest.raises(ValueError, match="retire_below"):
        SpeculativeDecoder(target, retire_below=1.5)
