"""Under sampling, xspec (draft heads, layout-masked drafts, the exact rule) and sjd:init=face over the
structure-masked target draw what AR over the same target draws: a chi-square over 20k meshes' first tokens, with
a lying drafter (it draws from the masked heads but hands the rule the unmasked ones) as the control it catches."""

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency
from transformers import LlamaForCausalLM

from mmaccel.drafting.heads import DraftHeads
from mmaccel.mesh.grammar import FaceGrammarModel
from mmaccel.mesh.methods import build_mesh_decoder, parse_mesh_method
from mmaccel.mesh.model import MeshGPT, mesh_config
from mmaccel.mesh.structure_mask import StructuredHeadsDrafter
from mmaccel.mesh.tokenizer import MeshVocab
from mmaccel.sampling import SamplingConfig, target_probs

N, TOKENS = 20000, 4
VOCAB = MeshVocab(levels=4, num_classes=2)  # 4 coordinate bins: few enough cells for a chi-square


def target() -> FaceGrammarModel:
    torch.manual_seed(5)
    gpt = LlamaForCausalLM(mesh_config("mesh-tiny", VOCAB, 2))
    with torch.no_grad():  # peaked logits make drafts survive often, so acceptance and resampling both happen
        gpt.lm_head.weight.mul_(6.0)
    return FaceGrammarModel(MeshGPT(gpt.eval(), VOCAB, 2), VOCAB.levels, VOCAB.eos)


def heads(hinted: bool = False) -> DraftHeads:
    torch.manual_seed(6)
    h = DraftHeads(32, VOCAB.size, num_heads=3, hinted=hinted)
    for p in h.parameters():
        torch.nn.init.normal_(p, std=0.7)
    return h.eval()


def draws(model: FaceGrammarModel, spec: str, hinted: bool = False) -> np.ndarray:
    name, params = parse_mesh_method(spec)
    decoder = build_mesh_decoder(
        model, name, params, heads=heads(hinted), sampling=SamplingConfig(1.0), levels=VOCAB.levels, eos=VOCAB.eos
    )
    prompt = model.model.class_prompt(torch.arange(N) % VOCAB.num_classes)
    tokens = decoder.generate(prompt, TOKENS, seeds=list(range(N))).tokens
    return (tokens * VOCAB.size ** torch.arange(TOKENS)).sum(1).numpy()


def p_value(a: np.ndarray, b: np.ndarray) -> float:
    cells = np.union1d(a, b)
    table = np.stack([[np.sum(a == c) for c in cells], [np.sum(b == c) for c in cells]])
    return chi2_contingency(table[:, table.sum(0) >= 10])[1]


@pytest.mark.slow
def test_xspec_and_face_jacobi_draw_what_ar_draws_and_a_lying_drafter_is_caught(monkeypatch):
    model = target()
    ar = draws(model, "ar")
    assert p_value(ar, draws(model, "xspec")) > 1e-3
    assert p_value(ar, draws(model, "xspec", hinted=True)) > 1e-3  # heads that read the face copy
    assert p_value(ar, draws(model, "xspec:branch=top", hinted=True)) > 1e-3  # greedy drafts, one-hot q
    assert p_value(ar, draws(model, "xspec:tree=2x2x1")) > 1e-3  # a static tree, masked node by node
    assert p_value(ar, draws(model, "sjd:init=face:window=4")) > 1e-3

    def lying(self, state, hidden):  # drafts from the masked heads, the rule told the unmasked distribution
        logits = self.logits(state, hidden)
        q = target_probs(logits, self.sampling or state.sampling)
        masked = q * self.allowed(state.generated, state.count, q.shape[-1])
        self._tokens = torch.multinomial(masked.flatten(0, 1) + 1e-12, 1).view(q.shape[:2])
        self._q = q

    monkeypatch.setattr(StructuredHeadsDrafter, "_draft", lying)
    assert p_value(ar, draws(model, "xspec")) < 1e-6
