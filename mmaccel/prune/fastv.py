"""FastV: drop the visual tokens the last token attends to least, after layer K."""

from __future__ import annotations

from .base import Choice, ModelInfo, PruneMethod, Stage, StageInput, check_layer, count_kept


class FastV(PruneMethod):
    """FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024).

    At layer K-1 the last token's attention row (mean over heads) ranks the visual tokens; layers >= K keep
    the top ``keep`` share. Published defaults: K=2, R=50% (``keep=0.5``). Only that one query row is
    computed, from the layer's own q/k projections, so the model keeps its SDPA attention.
    """

    name = "fastv"

    def __init__(self, keep: float, layer: int = 2):
        super().__init__(keep)
        self.layer = layer

    def bind(self, info: ModelInfo) -> None:
        layer = check_layer("layer", self.layer, info, minimum=1)
        self.stages = [Stage(layer=layer, select=self.select, wants_last_query=True)]

    def select(self, inp: StageInput) -> Choice:
        scores = inp.last_attention[inp.visual]
        top = scores.topk(count_kept(len(inp.visual), inp.keep)).indices
        return Choice(keep=inp.visual[top])
