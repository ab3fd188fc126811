"""DART: keep visual tokens that duplicate the pivot tokens least."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Choice, ModelInfo, PruneMethod, Stage, StageInput, check_layer, count_kept


class DART(PruneMethod):
    """DART (Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models: Duplication
    Matters More", 2025).

    At layer K a few pivot tokens are chosen by the L1 norm of their keys at layer K-1: ``pivot_image_tokens``
    among the visual tokens and ``pivot_text_tokens`` among the text after the visual tokens. For each pivot
    in turn, the not-yet-kept visual tokens least cosine-similar to it (on the final-normed hidden states
    entering layer K) are kept, ``keep_count / pivots`` per pivot, until the budget is met; any shortfall is
    filled by hidden-state norm. No attention map is needed. Published defaults: K=2, 4 image and 4 text pivots.
    """

    name = "dart"

    def __init__(self, keep: float, layer: int = 2, pivot_image_tokens: int = 4, pivot_text_tokens: int = 4):
        super().__init__(keep)
        self.layer = layer
        for label, value in (("pivot_image_tokens", pivot_image_tokens), ("pivot_text_tokens", pivot_text_tokens)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{label} must be a non-negative int, got {value!r}")
        if pivot_image_tokens + pivot_text_tokens == 0:
            raise ValueError("pivot_image_tokens + pivot_text_tokens must be at least 1")
        self.pivot_image_tokens = pivot_image_tokens
        self.pivot_text_tokens = pivot_text_tokens

    def bind(self, info: ModelInfo) -> None:
        layer = check_layer("layer", self.layer, info, minimum=1)
        self.stages = [Stage(layer=layer, select=self.select, wants_keys=True)]

    def select(self, inp: StageInput) -> Choice:
        vis = inp.visual
        budget = count_kept(len(vis), inp.keep)
        key_norm = inp.keys.float().abs().sum(-1)
        query = inp.text[inp.text > vis.max()]
        if query.numel() == 0:
            query = inp.text
        image_pivots = vis[key_norm[vis].topk(min(self.pivot_image_tokens, budget)).indices]
        text_pivots = query[key_norm[query].topk(min(self.pivot_text_tokens, len(query))).indices]
        pivots = torch.cat([image_pivots, text_pivots])
        per_pivot = max(1, round(budget / max(1, len(pivots))))

        normed = F.normalize(inp.final_norm(inp.hidden).float(), dim=-1)
        kept = torch.zeros(inp.hidden.shape[0], dtype=torch.bool, device=vis.device)
        kept[image_pivots] = True
        candidate = torch.zeros_like(kept)
        candidate[vis] = True
        candidate[image_pivots] = False
        similarity = normed[pivots] @ normed.T  # (pivots, L)
        for row in similarity:  # one step per pivot (<= 8), not per token
            room = budget - int(kept.sum())
            free = int(candidate.sum())
            if room <= 0 or free == 0:
                break
            picked = row.masked_fill(~candidate, float("inf")).topk(min(per_pivot, room, free), largest=False)
            kept[picked.indices] = True
            candidate[picked.indices] = False
        room = budget - int(kept.sum())
        if room > 0:
            norm = inp.hidden.float().norm(dim=-1).masked_fill(~candidate, float("-inf"))
            kept[norm.topk(room).indices] = True
        return Choice(keep=kept.nonzero().flatten())
