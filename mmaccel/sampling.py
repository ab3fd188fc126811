"""From logits to the target distribution ``p``, and seeded per-sample randomness.

Every acceptance rule verifies drafts against the distribution that plain AR sampling would draw from, so the
processing here (temperature, top-k, top-p) is shared by the AR baseline, the drafters and the verifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """Temperature (0 means greedy: ``p`` is one-hot on the argmax), top-k and top-p (nucleus) filtering."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def target_probs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Processed float32 probabilities over the last dimension of ``logits``."""
    logits = logits.float()
    if config.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / config.temperature
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = logits.topk(config.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if config.top_p is not None and config.top_p < 1:
        sorted_probs, order = probs.sort(-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p: a token is dropped when the mass before it does.
        drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= config.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: one token per row of ``probs`` (unnormalised is fine) from ``uniforms`` in [0, 1).

    Deterministic given the uniforms, which is what makes a sample the same alone or in a batch.
    """
    cdf = probs.cumsum(-1)
    target = uniforms.unsqueeze(-1).to(cdf.dtype) * cdf[..., -1:]
    # right=True: the first index whose cdf exceeds the target, so zero-probability tokens are never chosen.
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


class SampleRNG:
    """One seeded ``torch.Generator`` per sample; draws are per sample, so batching never changes them."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = []
        for seed in seeds:
            g = torch.Generator(device=self.device)
            g.manual_seed(int(seed))
            self.generators.append(g)

    def __len__(self) -> int:
        return len(self.generators)

    def select(self, rows: torch.Tensor) -> SampleRNG:
        """The generators of ``rows`` only, each continuing its own stream."""
        kept = SampleRNG([], self.device)
        kept.generators = [self.generators[i] for i in rows.tolist()]
        return kept

    def uniform(self, *shape: int) -> torch.Tensor:
        """``[B, *shape]`` uniforms in [0, 1), row ``b`` from sample ``b``'s generator."""
        return torch.stack([torch.rand(shape, generator=g, device=self.device) for g in self.generators])
