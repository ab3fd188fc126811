"""DivPrune: keep the most diverse visual tokens (greedy max-min over cosine distance)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from .base import Choice, OneStageMethod, StageInput, count_kept


def max_min_diverse_batched(
    features: torch.Tensor, valid: torch.Tensor, counts: list[int], *, owners: bool = False
) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
    """For each sample ``b``, indices of ``counts[b]`` rows of ``features[b]`` (``(B, n, D)``; rows where
    ``valid[b]`` is False are padding and never chosen) picked greedily to maximise the minimum cosine
    distance to those already chosen.

    The first pick is the row farthest from its nearest neighbour. Greedy max-min is sequential by nature:
    one batched O(n) step per kept token for the whole batch, no Python work per candidate or per sample.
    With ``owners=True`` also returns, per sample, each row's nearest chosen row (the chosen row itself for
    a chosen one), from the same distances.
    """
    normed = F.normalize(features.float(), dim=-1)
    batch, n = valid.shape
    # 1 - cosine similarity, in one fused call; the (B, n, n) matrix is the largest tensor here, so it is
    # edited in place rather than copied.
    ones = torch.ones(1, device=features.device)
    distance = torch.baddbmm(ones.expand(batch, n, n), normed, normed.transpose(1, 2), alpha=-1.0)
    rows = torch.arange(batch, device=features.device)
    if not valid.all():
        distance.masked_fill_(~valid[:, None, :], float("inf"))  # never anyone's nearest, never a pick's row
    diagonal = distance.diagonal(dim1=1, dim2=2)
    diagonal.fill_(float("inf"))
    nearest = distance.min(dim=-1).values
    pick = nearest.masked_fill(~valid, float("-inf")).argmax(dim=-1)
    # -inf marks a row as unavailable (chosen, or padding); torch.minimum keeps it so. A row's distance to
    # itself is -inf, so taking the minimum with the chosen row's distances also retires the chosen row.
    diagonal.fill_(float("-inf"))
    closest = torch.full((batch, n), float("inf"), device=features.device).masked_fill(~valid, float("-inf"))
    picks = []
    for _ in range(max(counts)):
        picks.append(pick)
        closest = torch.minimum(closest, distance[rows, pick])
        pick = closest.argmax(dim=-1)
    chosen = torch.stack(picks, dim=1)
    sizes = valid.sum(dim=1).tolist()
    out = [
        torch.arange(size, device=features.device) if count >= size else chosen[b, :count]
        for b, (count, size) in enumerate(zip(counts, sizes))
    ]
    if not owners:
        return out
    # Only the first counts[b] picks of a sample are its own; the rest stay out of its argmin.
    beyond = (
        torch.arange(chosen.shape[1], device=features.device) >= torch.tensor(counts, device=features.device)[:, None]
    )
    to_chosen = distance.gather(2, chosen[:, None, :].expand(-1, n, -1)).masked_fill(beyond[:, None, :], float("inf"))
    owner = chosen.gather(1, to_chosen.argmin(dim=-1))
    return out, [
        owner[b, :size] if count < size else torch.arange(size, device=features.device)
        for b, (count, size) in enumerate(zip(counts, sizes))
    ]


def max_min_diverse(features: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``count`` rows of ``features`` (``(n, D)``) chosen by greedy max-min cosine distance."""
    valid = torch.ones(1, features.shape[0], dtype=torch.bool, device=features.device)
    return max_min_diverse_batched(features[None], valid, [count])[0]


class DivPrune(OneStageMethod):
    """DivPrune (Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models",
    CVPR 2025).

    Before the LLM, on the projected visual features: pick the subset that maximises the minimum pairwise
    cosine distance (a max-min diversity problem), solved greedily, for the whole batch at once.
    Published default keep ratio: 0.098.

    ``proportional=True`` (an mmaccel option, off by default as in the paper) adds ToMe's proportional
    attention: every dropped token counts toward its most cosine-similar kept token, and the LLM's attention to
    a kept token gets ``+ log(count)``. Max-min diversity keeps rare tokens (edges, small objects) and drops
    most of the repetitive ones (background, object interiors), which skews what the LLM's softmax sees; the
    counts restore each region's weight. On the shipped testbed this is what keeps "how many shapes" right.
    """

    name = "divprune"

    def select_batch(self, inputs: list[StageInput]) -> list[Choice]:
        features = pad_sequence([inp.hidden[inp.visual] for inp in inputs], batch_first=True)
        lengths = torch.tensor([len(inp.visual) for inp in inputs], device=features.device)
        valid = torch.arange(features.shape[1], device=features.device) < lengths[:, None]
        counts = [count_kept(len(inp.visual), inp.keep) for inp in inputs]
        if not self.proportional:
            chosen = max_min_diverse_batched(features, valid, counts)
            return [Choice(keep=inp.visual[c]) for inp, c in zip(inputs, chosen)]
        chosen, owners = max_min_diverse_batched(features, valid, counts, owners=True)
        choices = []
        for inp, c, owner in zip(inputs, chosen, owners):
            dropped = torch.ones(len(owner), dtype=torch.bool, device=owner.device)
            dropped[c] = False
            choices.append(
                Choice(keep=inp.visual[c], absorbed=inp.visual[dropped], absorber=inp.visual[owner[dropped]])
            )
        return choices
