"""HoliTom: holistic token merging for video LLMs (outer temporal/spatial merge + inner-LLM merge)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Choice, ModelInfo, PruneMethod, Stage, StageInput, check_layer, count_kept, group_mean


def static_windows(similarity: torch.Tensor, tau: float, max_window: int) -> list[tuple[int, int]]:
    """Split frames into windows maximising the number of static tokens merged away.

    ``similarity`` (T-1, N) is the cosine similarity of each spatial token between adjacent frames. A token
    is static over a window when every adjacent pair in it is above ``tau``; merging it saves
    ``window_length - 1`` tokens. Dynamic programming over window ends, windows at most ``max_window`` long.
    """
    frames = similarity.shape[0] + 1
    above = (similarity > tau).float()
    saved = torch.zeros(frames, frames)
    for start in range(frames - 1):  # one vector step per frame
        still_static = torch.cumprod(above[start:], dim=0).sum(-1).cpu()
        saved[start, start + 1 :] = still_static * torch.arange(1, frames - start)
    saved = saved.tolist()
    best = [0.0] * frames
    begin = list(range(frames))
    for end in range(frames):
        best[end] = best[end - 1] if end > 0 else 0.0
        for size in range(2, min(end + 1, max_window) + 1):
            start = end - size + 1
            value = (best[start - 1] if start > 0 else 0.0) + saved[start][end]
            if value > best[end]:
                best[end], begin[end] = value, start
    windows, end = [], frames - 1
    while end >= 0:
        windows.append((begin[end], end))
        end = begin[end] - 1
    return windows[::-1]


def density_peaks(features: torch.Tensor, centers: int, neighbours: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-KNN cluster centres and the pairwise distances (Du et al. 2016, as used by HoliTom/PruneVid).

    Density is ``exp(-mean squared distance to the k nearest neighbours)``; a centre is dense and far from
    any denser token. Ties are broken by index (deterministic), not by random noise.
    """
    x = features.float()
    n, dim = x.shape
    distance = torch.cdist(x, x) / dim**0.5
    k = max(1, min(neighbours, n))
    nearest = distance.topk(k, dim=-1, largest=False).values
    density = (-(nearest**2).mean(-1)).exp() + 1e-6 * torch.arange(n, device=x.device) / n
    denser = density[None, :] > density[:, None]
    parent = torch.where(denser, distance, distance.max()).min(dim=-1).values
    return (parent * density).topk(centers).indices, distance


def cluster_merge(features: torch.Tensor, centers: int, beta: float, neighbours: int):
    """Merge tokens into ``centers`` DPC-KNN clusters: ``beta * centre + (1 - beta) * mean(members)``.

    Returns, per token, the row of its centre and its weight in that centre's merged value.
    """
    n = features.shape[0]
    center, distance = density_peaks(features, centers, min(neighbours, centers))
    owner = center[distance[:, center].argmin(dim=-1)]
    owner[center] = center
    members = torch.bincount(owner, minlength=n).float() - 1.0  # excluding the centre itself
    alone = members[owner] == 0
    weight = torch.where(alone, torch.ones(n), (1.0 - beta) / members[owner].clamp(min=1))
    is_center = torch.zeros(n, dtype=torch.bool)
    is_center[center] = True
    weight = torch.where(is_center & ~alone, torch.full((n,), beta), weight)
    return owner, weight


def _cat(rows: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
    return torch.cat(rows) if rows else empty


class HoliTom(PruneMethod):
    """HoliTom (Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models",
    NeurIPS 2025).

    Outer stage, before the LLM, per video: adjacent-frame similarity splits the frames into windows by
    dynamic programming (tokens above ``tau`` across a whole window are static); static tokens are
    averaged over their window (placed in its first frame) and then merged by density-peak clustering; in
    each frame the dynamic tokens keep a dominant share by vision-encoder attention and merge the rest
    into density-peak clusters (``1 - contextual_ratio`` dominant). ``keep`` is the share of video tokens
    entering the LLM; the per-group retention is raised to account for what static merging already saved.
    Inner stage at ``inner_layer``: ``inner_prune`` of the remaining visual tokens with the least
    last-token attention at the previous layer are averaged into their most similar kept token.
    Published defaults: tau=0.8, beta=0.6, k=7, contextual_ratio=0 (D), inner merge r=0.5 at layer 18 of
    28 (scaled here to the model's depth).
    """

    name = "holitom"
    needs_video = True

    def __init__(
        self,
        keep: float,
        tau: float = 0.8,
        beta: float = 0.6,
        neighbours: int = 7,
        contextual_ratio: float = 0.0,
        max_window: int = 1024,
        inner_layer: int | None = None,
        inner_prune: float = 0.5,
    ):
        super().__init__(keep)
        for label, value, low, high in (
            ("tau", tau, -1.0, 1.0),
            ("beta", beta, 0.0, 1.0),
            ("contextual_ratio", contextual_ratio, 0.0, 1.0),
            ("inner_prune", inner_prune, 0.0, 1.0),
        ):
            if not low <= value <= high:
                raise ValueError(f"{label} must be in [{low}, {high}], got {value!r}")
        if inner_prune == 1.0:
            raise ValueError("inner_prune must be below 1 (it is the share of visual tokens merged away)")
        if not isinstance(neighbours, int) or neighbours < 1:
            raise ValueError(f"neighbours must be a positive int, got {neighbours!r}")
        if not isinstance(max_window, int) or max_window < 1:
            raise ValueError(f"max_window must be a positive int, got {max_window!r}")
        self.tau, self.beta, self.neighbours = tau, beta, neighbours
        self.contextual_ratio, self.max_window = contextual_ratio, max_window
        self.inner_layer, self.inner_prune = inner_layer, inner_prune

    def bind(self, info: ModelInfo) -> None:
        self.stages = [Stage(layer=0, select=self.outer, wants_video=True, wants_vision=self.contextual_ratio < 1.0)]
        if self.inner_prune > 0 and info.num_layers > 1:
            layer = self.inner_layer
            if layer is None:
                layer = min(info.num_layers - 1, max(1, round(info.num_layers * 18 / 28)))
            check_layer("inner_layer", layer, info, minimum=1)
            self.stages.append(Stage(layer=layer, select=self.inner, wants_last_query=True))

    # ------------------------------------------------------------------------------------- outer
    def outer(self, inp: StageInput) -> Choice:
        if not inp.videos:
            raise ValueError(
                "method='holitom' needs video input (pixel_values_videos), but this sample has none; "
                "for single images use visionzip, divprune, tome, fastv or dart"
            )
        in_video = torch.cat([g.flatten() for g in inp.videos])
        others = inp.visual[~torch.isin(inp.visual, in_video)]  # image tokens next to the video stay
        score = None
        if inp.vision_score is not None:
            score = torch.full((inp.hidden.shape[0],), float("nan"), device=inp.hidden.device)
            score[inp.visual] = inp.vision_score.float()
        keeps, srcs, dests, weights = [others], [], [], []
        for grid in inp.videos:
            keep, src, dest, weight = self._video(inp.hidden, grid, score, inp.keep)
            keeps.append(keep)
            srcs.append(src)
            dests.append(dest)
            weights.append(weight)
        return Choice(keep=torch.cat(keeps), src=torch.cat(srcs), dest=torch.cat(dests), weight=torch.cat(weights))

    def _video(self, hidden: torch.Tensor, grid: torch.Tensor, score, keep: float):
        frames, per_frame = grid.shape
        feat = hidden[grid].float()  # (T, N, D)
        normed = F.normalize(feat, dim=-1)
        similarity = (normed[:-1] * normed[1:]).sum(-1)
        windows = static_windows(similarity, self.tau, self.max_window) if frames > 1 else [(0, 0)]
        total = frames * per_frame
        static = self._static_within_budget(similarity, windows, per_frame, total - count_kept(total, keep))
        saved = sum(int(s.sum()) * (end - start) for s, (start, end) in zip(static, windows))
        ratio = min(keep / ((total - saved) / total), 1.0)

        keep_rows, src_rows, dest_rows, weight_rows = [], [], [], []
        for mask, (start, end) in zip(static, windows):
            size = end - start + 1
            if mask.any():
                # Static tokens: window mean at the first frame, then density-peak clusters of those means.
                spots = mask.nonzero().flatten()
                means = feat[start : end + 1, spots].mean(0)
                centers = round(len(spots) * ratio)
                if centers > 0:
                    owner, weight = cluster_merge(means, centers, self.beta, self.neighbours)
                    members = grid[start : end + 1, spots]  # (size, S)
                    keep_rows.append(grid[start, spots[owner.unique()]])
                    src_rows.append(members.flatten())
                    dest_rows.append(grid[start, spots[owner]].expand(size, -1).flatten())
                    weight_rows.append((weight / size).expand(size, -1).flatten())
            moving = (~mask).nonzero().flatten()
            if len(moving) == 0:
                continue
            keep, src, dest, weight = self._dynamic(
                feat[start : end + 1, moving], grid[start : end + 1, moving], score, ratio
            )
            keep_rows.append(keep)
            src_rows.append(src)
            dest_rows.append(dest)
            weight_rows.append(weight)
        empty = grid.new_empty(0)
        return (
            _cat(keep_rows, empty),
            _cat(src_rows, empty),
            _cat(dest_rows, empty),
            _cat(weight_rows, torch.empty(0)),
        )

    def _static_within_budget(
        self, similarity: torch.Tensor, windows: list[tuple[int, int]], per_frame: int, budget: int
    ) -> list[torch.Tensor]:
        """Per window, which spatial tokens are merged as static: above ``tau`` across the whole window, and,
        when merging every such token would leave fewer than ``keep`` of the video's tokens, only the most
        static ones (highest least-similarity over the window) whose savings fit in ``budget`` tokens; the
        others are treated as dynamic, so the outer stage never keeps less than it is asked to."""
        lowest = [
            similarity[start:end].min(dim=0).values if end > start else similarity.new_full((per_frame,), -2.0)
            for start, end in windows
        ]
        flat_low = torch.stack(lowest).flatten()
        flat_static = flat_low > self.tau
        savings = torch.tensor([end - start for start, end in windows], dtype=torch.long)
        flat_saving = savings.repeat_interleave(per_frame)
        # Most static first; when every static token fits in the budget this keeps them all.
        order = torch.argsort(torch.where(flat_static, flat_low, -3.0), descending=True, stable=True)
        fits = (flat_saving[order] * flat_static[order]).cumsum(0) <= budget
        chosen = torch.zeros_like(flat_static)
        chosen[order] = fits & flat_static[order]
        return list(chosen.view(len(windows), per_frame))

    def _dynamic(self, feat: torch.Tensor, columns: torch.Tensor, score, ratio: float):
        """The dynamic tokens of one window, every frame at once: ``columns`` (frames, n) are their video
        columns and ``feat`` (frames, n, D) their features. Each frame keeps its ``ceil(n * ratio)`` share, the
        dominant part by vision score, and merges the rest into density-peak clusters."""
        frames, n = columns.shape
        retained = math.ceil(n * ratio)
        dominant = round(retained * (1.0 - self.contextual_ratio))
        contextual = retained - dominant
        top = score[columns].topk(dominant, dim=-1).indices if dominant > 0 else columns.new_empty(frames, 0)
        kept = columns.gather(1, top).flatten()
        keep, src, dest, weight = [kept], [kept], [kept], [torch.ones(len(kept))]
        if contextual > 0 and n > dominant:
            rest = torch.ones(frames, n, dtype=torch.bool, device=columns.device)
            rest.scatter_(1, top, False)
            rest = rest.nonzero()[:, 1].view(frames, n - dominant)
            for frame in range(frames):  # clustering is per frame: a Python step per frame only in this case
                others = columns[frame, rest[frame]]
                owner, w = cluster_merge(
                    feat[frame, rest[frame]], min(contextual, n - dominant), self.beta, self.neighbours
                )
                keep.append(others[owner.unique()])
                src.append(others)
                dest.append(others[owner])
                weight.append(w)
        return torch.cat(keep), torch.cat(src), torch.cat(dest), torch.cat(weight)

    # ------------------------------------------------------------------------------------- inner
    def inner(self, inp: StageInput) -> Choice:
        vis = inp.visual
        kept_count = count_kept(len(vis), 1.0 - self.inner_prune)
        top = inp.last_attention[vis].topk(kept_count).indices
        dropped = torch.ones(len(vis), dtype=torch.bool, device=vis.device)
        dropped[top] = False
        kept, dropped = vis[top], vis[dropped]
        if len(dropped) == 0:
            return Choice(keep=kept)
        normed = F.normalize(inp.hidden.float(), dim=-1)
        nearest = (normed[dropped] @ normed[kept].T).argmax(dim=-1)
        return group_mean(kept, dropped, kept[nearest])
