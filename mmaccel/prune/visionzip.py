"""VisionZip: dominant visual tokens by vision-encoder attention, plus merged contextual tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Choice, ModelInfo, PruneMethod, Stage, StageInput, check_flag, count_kept


class VisionZip(PruneMethod):
    """VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models",
    CVPR 2025).

    Dominant tokens: the visual tokens receiving the most vision-encoder attention at the feature layer
    ([CLS] attention for CLIP, mean attention received for SigLIP). Contextual tokens: the rest are split
    into uniformly strided targets and the others, each other token is assigned to its most similar target
    (cosine on the encoder's keys, mean over heads), and a target becomes ``target + mean(assigned)``.
    The published split is 54 dominant : 10 contextual (``contextual_ratio=10/64``). Unlike the reference
    code, the merge is applied to the projected features (the tokens the LLM reads) and kept tokens stay in
    their original order and positions. ``proportional=True`` (an mmaccel option) weighs each contextual
    token in the LLM's attention by the tokens merged into it (ToMe's proportional attention, see
    :class:`~mmaccel.prune.base.Choice`).
    """

    name = "visionzip"

    def __init__(self, keep: float, contextual_ratio: float = 10 / 64, proportional: bool = False):
        super().__init__(keep)
        if not 0.0 <= contextual_ratio < 1.0:
            raise ValueError(f"contextual_ratio must be in [0, 1), got {contextual_ratio!r}")
        self.contextual_ratio = contextual_ratio
        self.proportional = check_flag("proportional", proportional)

    def bind(self, info: ModelInfo) -> None:
        self.stages = [Stage(layer=0, select=self.select, wants_vision=True)]

    def select(self, inp: StageInput) -> Choice:
        vis = inp.visual
        total = count_kept(len(vis), inp.keep)
        contextual = round(total * self.contextual_ratio)
        dominant = total - contextual
        top = inp.vision_score.topk(dominant).indices
        rest = torch.ones(len(vis), dtype=torch.bool, device=vis.device)
        rest[top] = False
        rest = rest.nonzero().flatten()
        if contextual == 0 or len(rest) == 0:
            return Choice(keep=vis[top])
        step = max(1, len(rest) // contextual)
        is_target = torch.zeros(len(rest), dtype=torch.bool, device=vis.device)
        is_target[torch.arange(0, len(rest), step, device=vis.device)[:contextual]] = True
        targets, others = rest[is_target], rest[~is_target]
        metric = F.normalize(inp.vision_metric.float(), dim=-1)
        assign = (metric[others] @ metric[targets].T).argmax(dim=-1)
        counts = torch.bincount(assign, minlength=len(targets)).clamp(min=1).float()
        keep = torch.cat([vis[top], vis[targets]])
        src = torch.cat([vis[targets], vis[others]])
        dest = torch.cat([vis[targets], vis[targets][assign]])
        weight = torch.cat([torch.ones(len(targets), device=vis.device), 1.0 / counts[assign]])
        choice = Choice(keep=keep, src=src, dest=dest, weight=weight)
        if self.proportional:
            choice.absorbed, choice.absorber = vis[others], vis[targets][assign]
        return choice
