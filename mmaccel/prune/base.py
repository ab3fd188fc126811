"""The contract between the pruning session and one pruning method.

A method is a list of :class:`Stage` objects. A stage runs once per prefill, in front of decoder layer
``layer`` of the language model (``layer=0``: on the LLM input embeddings, i.e. "before the LLM"), and
for each sample picks which visual tokens survive and, optionally, how dropped tokens are merged into the
survivors. Everything about hooks, batching, positions, masks and the KV cache lives in
:mod:`mmaccel.prune.session`; a method only sees one sample's tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class StageInput:
    """One sample's view of the sequence entering the stage's decoder layer.

    All indices are positions in the *current* sequence (after earlier stages), never padding slots.
    """

    hidden: torch.Tensor  # (L, D) hidden states entering the layer
    visual: torch.Tensor  # (n,) indices of the prunable visual tokens, ascending
    text: torch.Tensor  # (m,) indices of the other real tokens, ascending
    keep: float  # the requested keep ratio for this stage
    final_norm: Callable[[torch.Tensor], torch.Tensor]
    last_attention: torch.Tensor | None = None  # (L,) last query row at layer-1, mean over heads
    keys: torch.Tensor | None = None  # (L, heads * head_dim) post-RoPE keys at layer-1
    vision_score: torch.Tensor | None = None  # (n,) vision-encoder attention received, per visual token
    vision_metric: torch.Tensor | None = None  # (n, c) vision-encoder keys (mean over heads)
    videos: list[torch.Tensor] = field(default_factory=list)  # (T, N) indices of each video's frame tokens


@dataclass
class Choice:
    """The surviving visual tokens of one sample, plus an optional linear merge.

    ``keep`` indexes the current sequence. The merge sets, for every kept token ``d`` that appears in
    ``dest``, ``h[d] = sum(weight[i] * h[src[i]] for i with dest[i] == d)``; a kept token that should
    contribute to its own merged value must be listed as its own source.

    ``absorbed``/``absorber`` (optional, current-sequence indices) turn on proportional attention, as in ToMe
    (Bolya et al., ICLR 2023): each token has a *size*, the number of original tokens it stands for (1 to
    start with), a kept token's size grows by the sizes of the dropped tokens it absorbs, and in every later
    layer, decode steps included, attention to a token gets ``+ log(size)`` on its logit, so a kept token
    weighs in softmax as much as the tokens it replaced together would have.
    """

    keep: torch.Tensor
    src: torch.Tensor | None = None
    dest: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    # Proportional attention: dropped token ``absorbed[i]`` now counts toward kept token ``absorber[i]``.
    absorbed: torch.Tensor | None = None
    absorber: torch.Tensor | None = None


@dataclass
class Stage:
    layer: int
    select: Callable[[StageInput], Choice]
    wants_last_query: bool = False  # needs the last token's attention row at layer - 1
    wants_keys: bool = False  # needs the post-RoPE keys of layer - 1
    wants_vision: bool = False  # needs vision-encoder attention scores and keys
    wants_video: bool = False  # needs video frame layout
    # One call for the whole batch (the samples that have visual tokens), for a selection that is sequential
    # by nature: looping over samples inside it would multiply its per-step overhead by the batch size.
    # Must return what ``select`` returns for each input.
    select_batch: Callable[[list[StageInput]], list[Choice]] | None = None

    def choose(self, inputs: list[StageInput]) -> list[Choice]:
        if self.select_batch is not None and inputs:
            return self.select_batch(inputs)
        return [self.select(inp) for inp in inputs]


@dataclass
class ModelInfo:
    """What a method may ask about the model when it is bound."""

    family: str
    num_layers: int
    has_video: bool
    has_vision_attention: bool


class PruneMethod:
    """Base class: subclasses set ``name`` and build ``self.stages`` in :meth:`bind`."""

    name: str = ""
    needs_video: bool = False

    def __init__(self, keep: float):
        self.keep = keep
        self.stages: list[Stage] = []

    def bind(self, info: ModelInfo) -> None:
        """Validate parameters against the model and build ``self.stages``."""
        raise NotImplementedError


class OneStageMethod(PruneMethod):
    """A method of one stage on the LLM's input (layer 0) that chooses for the whole batch in one call
    (:meth:`select_batch`), with ToMe's proportional attention as an option (see :class:`Choice`)."""

    def __init__(self, keep: float, proportional: bool = False):
        super().__init__(keep)
        self.proportional = check_flag("proportional", proportional)

    def bind(self, info: ModelInfo) -> None:
        self.stages = [Stage(layer=0, select=self.select, select_batch=self.select_batch)]

    def select(self, inp: StageInput) -> Choice:
        return self.select_batch([inp])[0]

    def select_batch(self, inputs: list[StageInput]) -> list[Choice]:
        """One choice per input, the samples of a batch together."""
        raise NotImplementedError


def check_layer(name: str, layer: int, info: ModelInfo, minimum: int = 0) -> int:
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise TypeError(f"{name} must be an int, got {type(layer).__name__}")
    if layer < minimum or layer >= info.num_layers:
        raise ValueError(
            f"{name}={layer} is outside the language model's layers: it must be in "
            f"[{minimum}, {info.num_layers - 1}] for this {info.num_layers}-layer model"
        )
    return layer


def check_flag(name: str, value: object) -> bool:
    """A boolean method parameter; 0 and 1 are accepted from Python callers (the CLIs type it as a bool)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be true or false (or 1 / 0), got {value!r}")


def count_kept(n: int, ratio: float) -> int:
    """Number of tokens a ratio keeps out of ``n``: rounded, at least one when there is any."""
    if n == 0:
        return 0
    return min(n, max(1, round(n * ratio)))


def group_mean(keep: torch.Tensor, assign_src: torch.Tensor, assign_dest: torch.Tensor) -> Choice:
    """Merge each ``assign_src`` token into ``assign_dest`` so every kept token becomes its group's mean."""
    dest_all = torch.cat([keep, assign_dest])
    src_all = torch.cat([keep, assign_src])
    size = torch.zeros(int(dest_all.max()) + 1, device=keep.device).index_add_(
        0, dest_all, torch.ones_like(dest_all, dtype=torch.float)
    )
    return Choice(keep=keep, src=src_all, dest=dest_all, weight=1.0 / size[dest_all])
