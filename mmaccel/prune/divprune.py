"""DivPrune: keep the most diverse visual tokens (greedy max-min over cosine distance)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Choice, ModelInfo, PruneMethod, Stage, StageInput, count_kept


def max_min_diverse(features: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``count`` rows chosen greedily to maximise the minimum cosine distance to those chosen.

    The first pick is the row farthest from its nearest neighbour. Greedy max-min is sequential by nature:
    one O(n) vector step per kept token, no Python work per candidate.
    """
    normed = F.normalize(features.float(), dim=-1)
    distance = 1.0 - normed @ normed.T
    n = distance.shape[0]
    if count >= n:
        return torch.arange(n, device=features.device)
    nearest = distance.masked_fill(torch.eye(n, dtype=torch.bool, device=distance.device), float("inf"))
    first = nearest.min(dim=0).values.argmax()
    chosen = torch.empty(count, dtype=torch.long, device=features.device)
    taken = torch.zeros(n, dtype=torch.bool, device=features.device)
    closest = torch.full((n,), float("inf"), device=features.device)
    pick = first
    for i in range(count):
        chosen[i] = pick
        taken[pick] = True
        closest = torch.minimum(closest, distance[pick])
        pick = closest.masked_fill(taken, float("-inf")).argmax()
    return chosen


class DivPrune(PruneMethod):
    """DivPrune (Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models",
    CVPR 2025).

    Before the LLM, on the projected visual features: pick the subset that maximises the minimum pairwise
    cosine distance (a max-min diversity problem), solved greedily. Published default keep ratio: 0.098.
    """

    name = "divprune"

    def bind(self, info: ModelInfo) -> None:
        self.stages = [Stage(layer=0, select=self.select)]

    def select(self, inp: StageInput) -> Choice:
        chosen = max_min_diverse(inp.hidden[inp.visual], count_kept(len(inp.visual), inp.keep))
        return Choice(keep=inp.visual[chosen])
