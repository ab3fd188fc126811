"""What the engine and the drafters share between steps: the batch's decode state and its statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .sampling import SampleRNG, SamplingConfig


def scratch_length(window: int) -> int:
    """Slots past the last generated token that a step may touch: a window of drafts, its bonus token, and the
    Jacobi drafter's next window laid out after them before the step's commit is known."""
    return 2 * window + 2


@dataclass
class GenerationStats:
    """What a generation cost and how its tokens were accepted."""

    nfe: int = 0  # target forward passes, the prompt's included
    draft_nfe: int = 0  # drafter model forward passes (draft model only)
    steps_per_sample: torch.Tensor | None = None  # [B] target forwards (prompt included) each sample needed
    tokens_per_step: list[torch.Tensor] = field(default_factory=list)  # per step: [B] tokens committed
    accept_step: torch.Tensor | None = None  # [B, N] the forward (0 = prompt) that committed each token
    windows: list[int] = field(default_factory=list)  # per step: the window verified (0: a plain AR step)
    calibration_s: float = 0.0  # window="auto": time spent measuring verify costs (inside wall_s)
    wall_s: float = 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Mean tokens committed per target forward, over samples (AR gives 1)."""
        n = self.accept_step.shape[1]
        return float((n / self.steps_per_sample.float()).mean())

    def as_dict(self) -> dict[str, Any]:
        return {
            "nfe": self.nfe,
            "draft_nfe": self.draft_nfe,
            "steps_per_sample": self.steps_per_sample.tolist(),
            "mean_accepted_length": self.mean_accepted_length,
            "wall_s": self.wall_s,
        }


@dataclass
class GenerationOutput:
    tokens: torch.Tensor  # [B, N]
    stats: GenerationStats


@dataclass
class DecodeState:
    """Everything a drafter may read about the batch between steps."""

    prompt: Any
    sampling: SamplingConfig
    rng: SampleRNG
    vocab_size: int
    max_length: int  # cache slots
    generated: torch.Tensor  # [B, N + 2L + 2] committed tokens; the tail is scratch for drafters
    count: torch.Tensor  # [B] committed tokens
    last_pos: torch.Tensor  # [B] position of the last committed token (not yet forwarded)
    done: torch.Tensor  # [B]
    stats: GenerationStats

    @property
    def batch_size(self) -> int:
        return self.generated.shape[0]

    @property
    def device(self) -> torch.device:
        return self.generated.device

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch ``rows`` (finished samples leaving the batch); the prompt is the prefill's, not kept."""
        self.generated = self.generated.index_select(0, rows)
        self.count = self.count.index_select(0, rows)
        self.last_pos = self.last_pos.index_select(0, rows)
        self.done = self.done.index_select(0, rows)
        self.rng = self.rng.select(rows)

    @property
    def last_token(self) -> torch.Tensor:
        return self.generated.gather(1, (self.count - 1)[:, None]).squeeze(1)
