"""The contract between the speculative engine and a token model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from .cache import SlotCache


@dataclass
class ModelOutput:
    """Logits (float32) and, when asked, the last hidden state, for every forwarded token."""

    logits: torch.Tensor  # [B, T, V]
    hidden: torch.Tensor | None = None  # [B, T, D]


@runtime_checkable
class Prompt(Protocol):
    """What a model is conditioned on. ``lengths`` is the number of positions it occupies, per sample."""

    lengths: torch.Tensor

    @property
    def batch_size(self) -> int: ...

    def cat(self, other: Any) -> Any: ...


@dataclass
class TokenPrompt:
    """Right-padded prompt token ids ``[B, P]`` with each sample's true length ``[B]``."""

    ids: torch.Tensor
    lengths: torch.Tensor

    def __post_init__(self):
        if self.ids.dim() != 2:
            raise ValueError(f"prompt ids must be [batch, length], got shape {tuple(self.ids.shape)}")
        if self.lengths.shape != (self.ids.shape[0],):
            raise ValueError("prompt lengths must hold one length per prompt row")
        if int(self.lengths.min()) < 1 or int(self.lengths.max()) > self.ids.shape[1]:
            raise ValueError("every prompt must hold at least one token and fit its row")

    @classmethod
    def from_lists(cls, prompts: Sequence[Sequence[int]], pad_id: int = 0) -> TokenPrompt:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, : len(p)] = torch.as_tensor(p, dtype=torch.long)
        return cls(ids, torch.tensor([len(p) for p in prompts], dtype=torch.long))

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def check_vocab(self, vocab_size: int) -> None:
        """Refuse token ids outside ``[0, vocab_size)``, padding included (it is forwarded too): they would fail
        deep inside an embedding lookup."""
        bad = (self.ids < 0) | (self.ids >= vocab_size)
        if bool(bad.any()):
            row, col = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"prompt: token id {int(self.ids[row, col])} (row {row}, position {col}) is outside the "
                f"model's vocabulary [0, {vocab_size})"
            )

    def cat(self, other: TokenPrompt) -> TokenPrompt:
        width = max(self.ids.shape[1], other.ids.shape[1])
        pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
        return TokenPrompt(torch.cat([pad(self.ids), pad(other.ids)]), torch.cat([self.lengths, other.lengths]))

    def to(self, device: torch.device | str) -> TokenPrompt:
        return TokenPrompt(self.ids.to(device), self.lengths.to(device))


@runtime_checkable
class TokenModel(Protocol):
    """A model the engine can drive.

    ``forward`` writes the keys and values of ``tokens`` at cache slots equal to ``positions`` (per sample) and
    returns logits for each; a query at position ``p`` sees slots ``<= p`` (see :class:`SlotCache`). Rolling back
    is implicit: the engine always rewrites from the last committed token onward. A model that keeps per-sample
    state beside the cache (prompt lengths, a guidance wrapper's shifts) also has ``reorder(cache, rows)``, which
    keeps only batch ``rows`` when finished samples leave the batch (see :func:`reorder`).
    """

    vocab_size: int

    def new_cache(self, batch_size: int, max_length: int) -> SlotCache: ...

    def prefill(self, prompt: Any, cache: SlotCache, output_hidden: bool = False) -> ModelOutput:
        """Forward the prompt; return the output at each sample's last prompt position, ``[B, 1, ...]``."""
        ...

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput: ...

    def embedding_table(self) -> torch.Tensor:
        """``[V, D]`` embeddings that define which tokens are near each other (codebook, token embeddings)."""
        ...

    @property
    def device(self) -> torch.device: ...


def reorder(model: TokenModel, cache: SlotCache, rows: torch.Tensor) -> None:
    """Keep only batch ``rows`` of ``model``'s ``cache``: the model's own ``reorder`` when it keeps per-sample state
    beside the cache (a guidance wrapper), the cache's otherwise."""
    if hasattr(model, "reorder"):
        model.reorder(cache, rows)
    else:
        cache.reorder(rows)


def gather_last(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x[b, lengths[b] - 1]`` for each row, kept as ``[B, 1, ...]``."""
    idx = (lengths - 1).to(x.device).view(-1, 1, *([1] * (x.dim() - 2)))
    return x.gather(1, idx.expand(-1, 1, *x.shape[2:]))
