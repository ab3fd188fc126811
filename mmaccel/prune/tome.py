"""ToMe: merge visual tokens by bipartite soft matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Choice, OneStageMethod, StageInput, count_kept, group_mean


def bipartite_merge_batched(features: torch.Tensor, count: int) -> torch.Tensor:
    """:func:`bipartite_merge` for a batch of samples with the same number of tokens: ``features`` (B, n, D) ->
    (B, n) group ids. Every round is one set of tensor ops for the whole batch."""
    batch, n, dim = features.shape
    device = features.device
    offsets = (torch.arange(batch, device=device) * n)[:, None]  # rows of the flattened (B * n, D) sums
    owner = torch.arange(n, device=device).repeat(batch, 1)  # original row -> current token (its position row)
    alive = owner.clone()  # current tokens, as original row ids, in order
    sums = features.float().reshape(batch * n, dim).clone()
    sizes = torch.ones(batch * n, device=device)
    while alive.shape[1] > count:
        r = min(alive.shape[1] - count, alive.shape[1] // 2)
        a, b = alive[:, 0::2], alive[:, 1::2]
        mean = sums / sizes.unsqueeze(-1)
        score = F.normalize(mean[a + offsets], dim=-1) @ F.normalize(mean[b + offsets], dim=-1).transpose(1, 2)
        best, target = score.max(dim=-1)
        merged = best.argsort(dim=-1, descending=True, stable=True)[:, :r]  # ties: the earlier A token first
        src, dst = a.gather(1, merged), b.gather(1, target.gather(1, merged))
        src_rows, dst_rows = (src + offsets).flatten(), (dst + offsets).flatten()
        sums.index_add_(0, dst_rows, sums[src_rows])
        sizes.index_add_(0, dst_rows, sizes[src_rows])
        redirect = torch.arange(n, device=device).repeat(batch, 1).scatter_(1, src, dst)
        owner = redirect.gather(1, owner)
        keep = torch.ones(alive.shape, dtype=torch.bool, device=device)
        keep[:, 0::2] = keep[:, 0::2].scatter(1, merged, False)
        alive = alive[keep].view(batch, -1)  # every sample drops the same r tokens
    return owner


def bipartite_merge(features: torch.Tensor, count: int) -> torch.Tensor:
    """Group ids (0..count-1, one per row) after merging ``features`` down to ``count`` tokens.

    Each round splits the tokens (in order) into alternating sets A and B, links each A token to its most
    similar B token (cosine), and merges the ``r`` most similar links, ``r`` at most half the tokens. Merged
    features are size-weighted means, i.e. the mean of all original rows in the group ("proportional" ToMe).
    Returns for every original row the index of its group's destination row (a surviving B token).
    """
    return bipartite_merge_batched(features[None], count)[0]


class ToMe(OneStageMethod):
    """ToMe (Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023), applied to the visual tokens
    before the LLM.

    Bipartite soft matching with proportional (size-weighted) averaging, repeated until ``keep`` of the
    visual tokens remain. Similarity is cosine on the projected visual features (the tokens the LLM reads);
    a merged token sits at the position of its surviving B token. Samples with the same number of visual
    tokens are merged together, as one batch.

    ``proportional=True`` adds the paper's proportional attention (``softmax(QK^T / sqrt(d) + log s)``, ``s``
    the merged token's size) in every LLM layer. The official code turns it on inside the ViT it merges; here
    the merge is in front of an unmodified LLM, so it is off by default.
    """

    name = "tome"

    def select_batch(self, inputs: list[StageInput]) -> list[Choice]:
        by_length: dict[int, list[int]] = {}
        for i, inp in enumerate(inputs):
            by_length.setdefault(len(inp.visual), []).append(i)
        choices: list[Choice | None] = [None] * len(inputs)
        for length, members in by_length.items():
            features = torch.stack([inputs[i].hidden[inputs[i].visual] for i in members])
            owners = bipartite_merge_batched(features, count_kept(length, inputs[members[0]].keep))
            for i, owner in zip(members, owners):
                vis = inputs[i].visual
                moved = owner != torch.arange(length, device=vis.device)
                merged, into = vis[moved], vis[owner[moved]]
                choice = group_mean(vis[owner.unique()], merged, into)
                if self.proportional:
                    choice.absorbed, choice.absorber = merged, into
                choices[i] = choice
        return choices
