"""ToMe: merge visual tokens by bipartite soft matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ModelInfo, PruneMethod, Stage, StageInput, count_kept, group_mean


def bipartite_merge(features: torch.Tensor, count: int) -> torch.Tensor:
    """Group ids (0..count-1, one per row) after merging ``features`` down to ``count`` tokens.

    Each round splits the tokens (in order) into alternating sets A and B, links each A token to its most
    similar B token (cosine), and merges the ``r`` most similar links, ``r`` at most half the tokens. Merged
    features are size-weighted means, i.e. the mean of all original rows in the group ("proportional" ToMe).
    Returns for every original row the index of its group's destination row (a surviving B token).
    """
    n = features.shape[0]
    owner = torch.arange(n, device=features.device)  # original row -> current token (its position row)
    alive = torch.arange(n, device=features.device)  # current tokens, as original row ids, in order
    sums = features.float().clone()
    sizes = torch.ones(n, device=features.device)
    while len(alive) > count:
        r = min(len(alive) - count, len(alive) // 2)
        a, b = alive[0::2], alive[1::2]
        mean = sums / sizes.unsqueeze(-1)
        score = F.normalize(mean[a], dim=-1) @ F.normalize(mean[b], dim=-1).T
        best, target = score.max(dim=-1)
        merged = best.argsort(descending=True)[:r]
        src, dst = a[merged], b[target[merged]]
        sums.index_add_(0, dst, sums[src])
        sizes.index_add_(0, dst, sizes[src])
        redirect = torch.arange(n, device=features.device)
        redirect[src] = dst
        owner = redirect[owner]
        keep = torch.ones(len(alive), dtype=torch.bool, device=features.device)
        keep[0::2][merged] = False
        alive = alive[keep]
    return owner


class ToMe(PruneMethod):
    """ToMe (Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023), applied to the visual tokens
    before the LLM.

    Bipartite soft matching with proportional (size-weighted) averaging, repeated until ``keep`` of the
    visual tokens remain. Similarity is cosine on the projected visual features (the tokens the LLM reads);
    a merged token sits at the position of its surviving B token.
    """

    name = "tome"

    def bind(self, info: ModelInfo) -> None:
        self.stages = [Stage(layer=0, select=self.select)]

    def select(self, inp: StageInput):
        vis = inp.visual
        owner = bipartite_merge(inp.hidden[vis], count_kept(len(vis), inp.keep))
        survivors = owner.unique()
        moved = owner != torch.arange(len(vis), device=vis.device)
        return group_mean(vis[survivors], vis[moved], vis[owner[moved]])
