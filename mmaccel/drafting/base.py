"""The drafter contract: propose a window of tokens and the distribution each was drawn from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from ..models.base import ModelOutput
from ..state import DecodeState
from ..tree import ancestors_of, depths_of


@dataclass
class Draft:
    """``tokens`` ``[B, L]`` and ``q`` ``[B, L, V]``: the distribution each draft token was drawn from.

    A tree draft also has ``parents`` ``[B, L]``: each node's parent among the nodes, ``-1`` for the last committed
    token (see :mod:`mmaccel.tree`); without it the draft is a chain (``parents = i - 1``).
    """

    tokens: torch.Tensor
    q: torch.Tensor
    parents: torch.Tensor | None = None

    @cached_property
    def ancestors(self) -> torch.Tensor:
        """``[B, L+1, L+1]`` ancestor-or-self relation over tree indices (0: the last committed token)."""
        parents = self.parents
        if parents is None:
            parents = torch.arange(-1, self.tokens.shape[1] - 1, device=self.tokens.device).expand_as(self.tokens)
        return ancestors_of(parents)

    @cached_property
    def depth(self) -> torch.Tensor:
        """``[B, L]`` each node's depth below the last committed token (a chain: ``1..L``)."""
        if self.parents is None:
            return torch.arange(1, self.tokens.shape[1] + 1, device=self.tokens.device).expand_as(self.tokens)
        return depths_of(self.ancestors)[:, 1:]


class Drafter:
    """Base class. The engine calls :meth:`begin` after the prompt, then :meth:`propose` and :meth:`update`
    once per step. ``window`` is the number of drafts per step."""

    window: int = 1
    #: Nodes per proposal: the window for a chain, the tree's size for a tree drafter.
    @property
    def nodes(self) -> int:
        return self.window

    #: True when :meth:`update` needs the target's last hidden state (multi-head drafting).
    needs_hidden: bool = False
    #: Attributes holding per-sample tensors (batch first), which :meth:`reorder` keeps in step with the batch.
    per_sample: tuple[str, ...] = ()

    def begin(self, state: DecodeState, prefill: ModelOutput) -> None:
        pass

    def propose(self, state: DecodeState) -> Draft:
        raise NotImplementedError

    def update(self, state: DecodeState, out: ModelOutput, p: torch.Tensor, accepted: torch.Tensor) -> None:
        """Called after the step committed ``accepted + 1`` tokens per sample (``state`` already advanced)."""
        pass

    def keep_path(self, columns: torch.Tensor) -> None:
        """After a tree step: the tree indices ``[B, D+1]`` of the root and the accepted path (padded), for a
        drafter that keeps a cache of its own tree (see :meth:`~mmaccel.models.SlotCache.keep_path`)."""
        pass

    def resize(self, state: DecodeState, window: int) -> None:
        """Draft ``window`` tokens from the next step on (``window="auto"``); drafters that cannot refuse."""
        raise ValueError(f"{type(self).__name__} drafts a fixed window; window='auto' needs a Jacobi or draft model")

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep only batch ``rows`` (finished samples leaving the batch)."""
        for name in self.per_sample:
            value = getattr(self, name, None)
            if value is not None:  # state a drafter holds only in some modes (e.g. coupling noise)
                setattr(self, name, value.index_select(0, rows.to(value.device)))


def check_window(window: int) -> int:
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    return window


def one_hot(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(tokens, vocab).float()
