"""Running one stage on the hidden states entering its layer: which slots survive, merged how, standing for
how many tokens.

A prefill runs a stage *fresh*: it builds each sample's :class:`~mmaccel.prune.base.StageInput`, asks the
stage for a :class:`~mmaccel.prune.base.Choice` and applies it. A call that only extends the last pruned
prompt (generation without a cache re-runs the whole sequence) *reuses* the prompt's choice instead, so
generated tokens never change which visual tokens survive. Both return the shorter sequence and a
:class:`StageResult`, which the session's hooks use for positions, masks and the cache. Nothing here holds
state or touches the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import Choice, Stage, StageInput


@dataclass
class StageResult:
    kept: torch.Tensor  # (B, Ls) original column of each slot
    valid: torch.Tensor  # (B, Ls) False for left-padding slots added to even out kept counts
    local: list[torch.Tensor]  # per sample: kept slots as indices into the stage's input sequence
    merges: list[Choice | None]
    input_length: int  # stage input length at the prompt's prefill, for reusing the choice on longer inputs
    log_size: torch.Tensor | None = None  # (B, Ls) log of the tokens each slot stands for; None: all 1


@dataclass
class PromptTokens:
    """What the stages of one prefill read of its prompt, by original column."""

    padding: torch.Tensor  # (B, L) True for real tokens
    visual: torch.Tensor  # (B, L) prunable visual tokens
    videos: list[list[torch.Tensor]] = field(default_factory=list)  # per sample, (T, N) columns per video
    side: torch.Tensor | None = None  # (B, L, 1 + c) vision score and metric; NaN rows off the vision tokens


def stage_at(stages: list[Stage], index: int) -> int:
    """Index of the last stage (``stages`` sorted by layer) whose layer is <= ``index``, or -1."""
    found = -1
    for i, stage in enumerate(stages):
        if stage.layer <= index:
            found = i
    return found


def entering(previous: StageResult | None, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) original columns and validity of the slots entering a stage: the previous stage's output, or
    the whole prompt in front of the first stage."""
    if previous is not None:
        return previous.kept, previous.valid
    batch, length = hidden.shape[:2]
    kept = torch.arange(length, device=hidden.device).expand(batch, -1)
    return kept, torch.ones(batch, length, dtype=torch.bool, device=hidden.device)


def run_fresh(
    stage: Stage,
    hidden: torch.Tensor,
    previous: StageResult | None,
    prompt: PromptTokens,
    *,
    keep: float,
    final_norm: Callable[[torch.Tensor], torch.Tensor],
    attention: nn.Module | None = None,
    captured: dict | None = None,
) -> tuple[torch.Tensor, StageResult]:
    """Run ``stage`` on ``hidden`` (B, L, D) in the prefill that computes its choice.

    ``previous`` is the result of the stage before (None for the first), ``attention`` and ``captured`` the
    self-attention of layer ``stage.layer - 1`` and what the session captured there (its RoPE and q/k
    projections), needed only by stages that want the last query or the keys.
    """
    batch, length = hidden.shape[:2]
    prev_kept, prev_valid = entering(previous, hidden)
    real = prev_valid & prompt.padding.gather(1, prev_kept)
    visual = prompt.visual.gather(1, prev_kept) & real
    extras = stage_extras(stage, attention, captured, hidden, real)
    texts, inputs, empty = [], [], []
    for b in range(batch):
        vis = visual[b].nonzero().flatten()
        texts.append((real[b] & ~visual[b]).nonzero().flatten())
        empty.append(vis.numel() == 0)
        if not empty[b]:
            inputs.append(
                stage_input(stage, b, hidden[b], vis, texts[b], extras, prompt, prev_kept[b], real[b], keep, final_norm)
            )
    chosen = iter(stage.choose(inputs))
    choices = [Choice(keep=texts[b][:0]) if empty[b] else next(chosen) for b in range(batch)]
    locals_ = [torch.cat([texts[b], choice.keep]).sort().values for b, choice in enumerate(choices)]
    merges = [choice if choice.src is not None else None for choice in choices]
    out, local_idx, kept, valid = _gather(hidden, locals_, merges, prev_kept, prev_valid)
    prev_size = previous.log_size if previous is not None else None
    log_size = log_sizes(prev_size, choices, local_idx, length)
    return out, StageResult(kept, valid, locals_, merges, length, log_size)


def run_reused(
    reuse: StageResult, hidden: torch.Tensor, previous: StageResult | None
) -> tuple[torch.Tensor, StageResult]:
    """Apply the choice ``reuse`` made at the prompt's prefill to ``hidden`` (B, L, D), a longer input that
    extends that prompt: the same slots, plus the new tokens (size 1) at the right end."""
    length = hidden.shape[1]
    prev_kept, prev_valid = entering(previous, hidden)
    tail = torch.arange(reuse.input_length, length, device=hidden.device)
    locals_ = [torch.cat([local, tail]) for local in reuse.local]
    out, local_idx, kept, valid = _gather(hidden, locals_, reuse.merges, prev_kept, prev_valid)
    log_size = reuse.log_size
    if log_size is not None:
        log_size = torch.nn.functional.pad(log_size, (0, local_idx.shape[1] - log_size.shape[1]))
    return out, StageResult(kept, valid, locals_, reuse.merges, length, log_size)


def _gather(
    hidden: torch.Tensor,
    locals_: list[torch.Tensor],
    merges: list[Choice | None],
    prev_kept: torch.Tensor,
    prev_valid: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stage's output: each sample's merges applied, its kept slots gathered and left-padded to the widest
    sample. Returns the output, the slots as indices into the input, their original columns and validity."""
    batch = hidden.shape[0]
    rows = [hidden[b] if merge is None else apply_merge(hidden[b], merge) for b, merge in enumerate(merges)]
    width = max(len(x) for x in locals_)
    local_idx = torch.zeros(batch, width, dtype=torch.long, device=hidden.device)
    valid = torch.zeros(batch, width, dtype=torch.bool, device=hidden.device)
    for b, local in enumerate(locals_):
        local_idx[b, width - len(local) :] = local
        valid[b, width - len(local) :] = True
    out = torch.stack(rows).gather(1, local_idx.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return out, local_idx, prev_kept.gather(1, local_idx), valid & prev_valid.gather(1, local_idx)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def stage_extras(
    stage: Stage, attention: nn.Module | None, captured: dict | None, hidden: torch.Tensor, real: torch.Tensor
) -> dict[str, torch.Tensor]:
    """What ``stage`` wants from layer ``stage.layer - 1``, from its captured q/k projections and RoPE:
    post-RoPE ``keys`` and the last query's ``last_attention`` row over the real tokens (mean over heads).
    Only the one query row is computed, so the model keeps its own attention kernel."""
    extras: dict[str, torch.Tensor] = {}
    if not (stage.wants_last_query or stage.wants_keys):
        return extras
    dim = attention.head_dim
    cos, sin = captured["cos"], captured["sin"]
    cos, sin = cos.expand(hidden.shape[0], *cos.shape[1:]), sin.expand(hidden.shape[0], *sin.shape[1:])
    k = captured["k_proj"]
    k = k.view(*k.shape[:2], -1, dim).transpose(1, 2)
    k = k * cos.unsqueeze(1) + rotate_half(k) * sin.unsqueeze(1)
    if stage.wants_keys:
        extras["keys"] = k.transpose(1, 2).flatten(2)
    if stage.wants_last_query:
        q = captured["q_proj"][:, -1:]
        q = q.view(q.shape[0], 1, -1, dim).transpose(1, 2)
        q = q * cos[:, -1:].unsqueeze(1) + rotate_half(q) * sin[:, -1:].unsqueeze(1)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scores = (q @ k.transpose(-1, -2)).squeeze(2) * attention.scaling
        # The last query row sees every earlier real token (left padding keeps it at the end).
        scores = scores.masked_fill(~real.unsqueeze(1), float("-inf"))
        extras["last_attention"] = torch.softmax(scores.float(), dim=-1).mean(1)
    return extras


def vision_side(
    image_side: list[torch.Tensor],
    video_side: list[torch.Tensor],
    image: torch.Tensor,
    video: torch.Tensor,
    visual: torch.Tensor,
    method: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vision encoder's score and metric per column (B, L, 1 + c), from what the probe logged per call
    (``image_side``/``video_side``, in placeholder order), and the prunable set ``visual`` without the
    newline tokens the encoder has no row for (they stay, like text)."""
    if (image.any() and not image_side) or (video.any() and not video_side):
        raise ValueError(
            f"method={method!r} needs the vision encoder's attention, but the vision features "
            "were not computed in this call (precomputed mm_encoder_outputs cannot be pruned by it)"
        )
    width = (image_side or video_side)[0].shape[-1]
    side = torch.full((*visual.shape, width), float("nan"), device=visual.device)
    if image_side:
        side[image] = torch.cat(image_side).to(side)
    if video_side:
        side[video] = torch.cat(video_side).to(side)
    return side, visual & ~side[..., 0].isnan()


def stage_input(
    stage: Stage,
    b: int,
    hidden: torch.Tensor,
    vis: torch.Tensor,
    text: torch.Tensor,
    extras: dict[str, torch.Tensor],
    prompt: PromptTokens,
    kept_row: torch.Tensor,
    real_row: torch.Tensor,
    keep: float,
    final_norm: Callable[[torch.Tensor], torch.Tensor],
) -> StageInput:
    """Sample ``b``'s view of the sequence entering ``stage``: ``hidden`` (L, D), its visual and text slots,
    and ``kept_row``/``real_row``, the original column and realness of each slot."""
    inp = StageInput(hidden=hidden, visual=vis, text=text, keep=keep, final_norm=final_norm)
    if "last_attention" in extras:
        inp.last_attention = extras["last_attention"][b]
    if "keys" in extras:
        inp.keys = extras["keys"][b]
    if prompt.side is not None and stage.wants_vision:
        side = prompt.side[b, kept_row[vis]]
        inp.vision_score, inp.vision_metric = side[:, 0], side[:, 1:]
    if prompt.videos[b]:
        # Original columns -> positions in the current sequence (tokens dropped earlier map to -1).
        where = torch.full((prompt.padding.shape[1],), -1, dtype=torch.long, device=hidden.device)
        slots = real_row.nonzero().flatten()
        where[kept_row[slots]] = slots
        inp.videos = [where[grid] for grid in prompt.videos[b]]
    return inp


def log_sizes(
    prev: torch.Tensor | None, choices: list[Choice], local_idx: torch.Tensor, length: int
) -> torch.Tensor | None:
    """Log sizes of a stage's output slots (``local_idx`` indexes its input of ``length`` tokens): the input's
    sizes (``prev``, as logs; all 1 when None), each kept token grown by the sizes of the tokens it absorbs.
    None while every size is 1."""
    if prev is None and all(c.absorbed is None for c in choices):
        return None
    size = prev.exp() if prev is not None else torch.ones(len(choices), length, device=local_idx.device)
    moves = [
        (b * length + c.absorbed, b * length + c.absorber) for b, c in enumerate(choices) if c.absorbed is not None
    ]
    if moves:
        flat = size.view(-1)
        absorbed, absorber = (torch.cat(x) for x in zip(*moves))
        flat.index_add_(0, absorber, flat[absorbed])
    return size.gather(1, local_idx).log()


def apply_merge(row: torch.Tensor, choice: Choice) -> torch.Tensor:
    """``row`` (L, D) with ``choice``'s linear merge applied to its ``dest`` slots."""
    acc = torch.zeros_like(row).index_add_(0, choice.dest, row[choice.src] * choice.weight.to(row).unsqueeze(-1))
    touched = torch.zeros(row.shape[0], dtype=torch.bool, device=row.device)
    touched[choice.dest] = True
    return torch.where(touched.unsqueeze(-1), acc, row)


def prefill_stats(
    stages: list[Stage], results: list[StageResult], padding: torch.Tensor, visual: torch.Tensor, layers: int
) -> dict:
    """Tokens (all, and visual) each of the ``layers`` decoder layers saw in a pruned prefill."""
    visual_full = int(visual.sum())
    tokens_per_layer, visual_per_layer = [], []
    for index in range(layers):
        s = stage_at(stages, index)
        if s < 0:
            tokens_per_layer.append(int(padding.sum()))
            visual_per_layer.append(visual_full)
        else:
            r = results[s]
            real = r.valid & padding.gather(1, r.kept)
            tokens_per_layer.append(int(real.sum()))
            visual_per_layer.append(int((real & visual.gather(1, r.kept)).sum()))
    return {
        "batch": padding.shape[0],
        "visual_tokens": visual_full,
        "tokens_per_layer": tokens_per_layer,
        "visual_tokens_per_layer": visual_per_layer,
    }
