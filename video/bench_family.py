"""``mmaccel bench video --family emu3|cosmos --model DIR``: the core's family bench
(:mod:`mmaccel.bench.family`) with the video families' default conditions."""

from __future__ import annotations

from typing import Any

import torch

from mmaccel.bench.family import format_table, run_family_bench

#: Emu3 prompts when ``--prompt`` is not given (clip ``i`` takes prompt ``i`` modulo their number).
DEFAULT_PROMPTS = ("a red ball rolls to the left", "a blue cube spins slowly", "waves on a beach at sunset")


def default_conditions(family: Any, count: int, seed: int) -> list:
    """Emu3: :data:`DEFAULT_PROMPTS`; Cosmos: one latent frame of uniformly drawn token ids per clip (seeded)."""
    if family.name == "emu3":
        return [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(count)]
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(family.model.vocab_size, (count, family.frame_tokens), generator=gen).tolist()


__all__ = ["DEFAULT_PROMPTS", "default_conditions", "format_table", "run_family_bench"]
