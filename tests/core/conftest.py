"""Shared fixtures for the core tests: tiny random Llama models and a hand-made position-dependent bigram model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from transformers import LlamaConfig, LlamaForCausalLM

from mmaccel.models import HFCausalLM, ModelOutput, SlotCache

VOCAB = 64


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The machine is shared with training jobs; tiny models gain nothing from intra-op threads.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_tiny_llama(seed: int, layers: int = 2, hidden: int = 32, vocab: int = VOCAB, init: float = 0.02):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=init,
        attn_implementation="sdpa",
    )
    return HFCausalLM(LlamaForCausalLM(config).eval())


@pytest.fixture(scope="session")
def target():
    """The tiny target model (random weights, vocabulary 64)."""
    return make_tiny_llama(0)


@pytest.fixture(scope="session")
def small_draft():
    """A different, smaller tiny model with the same vocabulary."""
    return make_tiny_llama(1, layers=1, hidden=16)


class BigramModel:
    """A hand-made :class:`TokenModel`: the logits at position ``t`` depend on ``t`` and the token there only.

    ``table[t, x]`` are the logits of the token at ``t + 1`` when token ``x`` sits at ``t``, so the target
    distribution depends on the previous token (conditioning matters) and on the position (the engine's
    position bookkeeping matters). No cache is needed; one is still handed out to honour the contract.
    """

    def __init__(self, table: torch.Tensor, embeddings: torch.Tensor | None = None):
        self.table = table.float()
        self.vocab_size = table.shape[-1]
        self.embeddings = embeddings if embeddings is not None else torch.eye(self.vocab_size)
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def new_cache(self, batch_size: int, max_length: int) -> SlotCache:
        return SlotCache(max_length)

    def forward(self, tokens, positions, cache, output_hidden: bool = False) -> ModelOutput:
        self.calls += 1
        if int(positions.max()) >= self.table.shape[0]:
            raise IndexError("position beyond the bigram table")
        logits = self.table[positions, tokens]
        return ModelOutput(logits, logits.clone() if output_hidden else None)

    def prefill(self, prompt, cache, output_hidden: bool = False) -> ModelOutput:
        last = prompt.lengths - 1
        tokens = prompt.ids.gather(1, last[:, None])
        return self.forward(tokens, last[:, None], cache, output_hidden)

    def embedding_table(self) -> torch.Tensor:
        return self.embeddings


def _chi2_pvalue(counts, probs, min_expected: float = 5.0) -> float:
    """Pearson chi-square goodness of fit of ``counts`` to ``probs``; cells expected below ``min_expected``
    are pooled into one cell. A sample that lands in a zero-probability cell gives p-value 0."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    probs = np.asarray(probs, dtype=np.float64).ravel()
    probs = probs / probs.sum()
    if counts[probs == 0].sum() > 0:
        return 0.0
    expected = probs * counts.sum()
    small = expected < min_expected
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    elif exp[-1] < min_expected and len(exp) > 1:  # fold a still-small pooled cell into the smallest kept one
        i = int(np.argmin(exp[:-1]))
        obs[i] += obs[-1]
        exp[i] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    return float(stats.chisquare(obs, exp).pvalue)


@pytest.fixture(scope="session")
def tiny_llama():
    """Factory: ``tiny_llama(seed, layers=2, hidden=32, vocab=64, init=0.02)``."""
    return make_tiny_llama


@pytest.fixture(scope="session")
def bigram_model():
    """The :class:`BigramModel` class."""
    return BigramModel


@pytest.fixture(scope="session")
def chi2_pvalue():
    """``chi2_pvalue(counts, probs)``: chi-square goodness-of-fit p-value with small cells pooled."""
    return _chi2_pvalue
