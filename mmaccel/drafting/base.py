"""The drafter contract: propose a window of tokens and the distribution each was drawn from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.base import ModelOutput
from ..state import DecodeState


@dataclass
class Draft:
    """``tokens`` ``[B, L]`` and ``q`` ``[B, L, V]``: the distribution each draft token was drawn from."""

    tokens: torch.Tensor
    q: torch.Tensor


class Drafter:
    """Base class. The engine calls :meth:`begin` after the prompt, then :meth:`propose` and :meth:`update`
    once per step. ``window`` is the number of drafts per step."""

    window: int = 1
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
