"""The selection algorithms on their own."""

from __future__ import annotations

import torch

from mmaccel.prune.base import StageInput
from mmaccel.prune.dart import DART
from mmaccel.prune.divprune import max_min_diverse
from mmaccel.prune.holitom import cluster_merge, static_windows
from mmaccel.prune.tome import bipartite_merge
from mmaccel.prune.visionzip import VisionZip


def test_divprune_picks_one_token_per_cluster():
    centers = torch.eye(4) * 10
    features = torch.cat([c + 0.01 * torch.randn(5, 4) for c in centers])
    chosen = max_min_diverse(features, 4)
    assert sorted((chosen // 5).tolist()) == [0, 1, 2, 3]


def test_divprune_batched_selection_equals_each_sample_alone():
    from mmaccel.prune.divprune import DivPrune

    torch.manual_seed(0)
    # Different numbers of visual tokens: the shorter samples are padded inside the batched greedy.
    inputs = [_stage_input(n_visual=n, keep=0.3) for n in (32, 7, 20, 1)]
    method = DivPrune(0.3)
    for alone, together in zip([method.select(inp) for inp in inputs], method.select_batch(inputs)):
        assert torch.equal(alone.keep, together.keep)
    counts = [c.keep.numel() for c in method.select_batch(inputs)]
    assert counts == [10, 2, 6, 1]
    proportional = DivPrune(0.3, proportional=True)
    for inp, alone, together in zip(inputs, map(proportional.select, inputs), proportional.select_batch(inputs)):
        for field in ("keep", "absorbed", "absorber"):
            assert torch.equal(getattr(alone, field), getattr(together, field))
        # Every visual token is kept or absorbed into its most similar kept token, once.
        assert torch.equal(torch.cat([alone.keep, alone.absorbed]).sort().values, inp.visual)
        normed = torch.nn.functional.normalize(inp.hidden, dim=-1)
        nearest = alone.keep[(normed[alone.absorbed] @ normed[alone.keep].T).argmax(-1)]
        assert torch.equal(alone.absorber, nearest)
    for inp, choice in zip(inputs, method.select_batch(inputs)):
        assert choice.keep.unique().numel() == choice.keep.numel()
        assert torch.isin(choice.keep, inp.visual).all()


def test_tome_merges_duplicates_first_and_reaches_the_count():
    base = torch.randn(6, 8)
    features = base.repeat_interleave(2, dim=0)  # every token has an exact twin next to it
    owner = bipartite_merge(features, 6)
    assert owner.unique().numel() == 6
    assert torch.equal(owner[0::2], owner[1::2])


def test_proportional_tome_counts_every_merged_token_into_its_group():
    from mmaccel.prune.tome import ToMe

    torch.manual_seed(0)
    inp = _stage_input(n_visual=32, keep=0.25)
    plain, choice = ToMe(0.25).select(inp), ToMe(0.25, proportional=True).select(inp)
    assert plain.absorbed is None and torch.equal(plain.keep, choice.keep)
    # Sizes from what was absorbed equal the groups the merge averages over (its weights are 1 / size).
    size = torch.ones(int(inp.hidden.shape[0])).index_add_(0, choice.absorber, torch.ones(len(choice.absorbed)))
    torch.testing.assert_close(choice.weight, 1.0 / size[choice.dest])
    assert size[choice.keep].sum() == 32 and not torch.isin(choice.absorbed, choice.keep).any()


def test_tome_batched_selection_equals_each_sample_alone():
    from mmaccel.prune.tome import ToMe

    torch.manual_seed(0)
    # Two lengths: samples of the same length are merged as one batch, the others apart.
    inputs = [_stage_input(n_visual=n, keep=0.25) for n in (32, 20, 32, 32)]
    inputs[2].hidden[2:10] = inputs[2].hidden[2]  # exact duplicates, as on a flat background: tied scores
    method = ToMe(0.25)
    together = method.select_batch(inputs)
    for inp, joint in zip(inputs, together):
        alone = method.select(inp)
        for field in ("keep", "src", "dest", "weight"):
            assert torch.equal(getattr(alone, field), getattr(joint, field))
    assert [c.keep.numel() for c in together] == [8, 5, 8, 8]


def test_static_windows_group_a_still_segment():
    similarity = torch.tensor([[0.9, 0.95], [0.99, 0.9], [0.1, 0.2], [0.9, 0.9]])  # 5 frames, cut after 2
    assert static_windows(similarity, tau=0.8, max_window=8) == [(0, 2), (3, 4)]
    assert static_windows(similarity, tau=0.8, max_window=2) in ([(0, 1), (2, 2), (3, 4)], [(0, 0), (1, 2), (3, 4)])


def test_cluster_merge_weights_sum_to_one_per_cluster():
    features = torch.cat([torch.zeros(4, 3), torch.ones(3, 3) * 5])
    owner, weight = cluster_merge(features, 2, beta=0.6, neighbours=3)
    assert owner.unique().numel() == 2
    sums = torch.zeros(7).index_add_(0, owner, weight)
    torch.testing.assert_close(sums[owner.unique()], torch.ones(2))


def _stage_input(n_visual=32, n_text=6, dim=16, keep=0.25) -> StageInput:
    length = 2 + n_visual + n_text
    return StageInput(
        hidden=torch.randn(length, dim),
        visual=torch.arange(2, 2 + n_visual),
        text=torch.cat([torch.arange(2), torch.arange(2 + n_visual, length)]),
        keep=keep,
        final_norm=lambda x: x,
        keys=torch.randn(length, dim),
        vision_score=torch.rand(n_visual),
        vision_metric=torch.randn(n_visual, 8),
    )


def test_dart_keeps_exactly_the_budget_of_visual_tokens():
    inp = _stage_input()
    choice = DART(0.25).select(inp)
    assert choice.keep.numel() == 8 and choice.keep.unique().numel() == 8
    assert torch.isin(choice.keep, inp.visual).all()


def test_visionzip_dominant_plus_contextual():
    inp = _stage_input(n_visual=64, keep=1 / 4)
    choice = VisionZip(0.25).select(inp)
    assert choice.keep.numel() == 16  # 14 dominant + 2 contextual at 10/64
    top = inp.visual[inp.vision_score.topk(14).indices]
    assert torch.isin(top, choice.keep).all()
    # each contextual token is its target plus the mean of the tokens assigned to it
    targets = choice.dest.unique()
    assert targets.numel() == 2
    for t in targets:
        w = choice.weight[choice.dest == t]
        torch.testing.assert_close(w.sum(), torch.tensor(2.0))


def test_proportional_visionzip_counts_each_merged_token_into_its_contextual_target():
    inp = _stage_input(n_visual=64, keep=1 / 4)
    plain, choice = VisionZip(0.25).select(inp), VisionZip(0.25, proportional=True).select(inp)
    assert plain.absorbed is None and torch.equal(plain.keep, choice.keep)
    # The dropped tokens are exactly the merged ones, each counted toward the target it is averaged into.
    assert torch.equal(torch.cat([choice.keep, choice.absorbed]).sort().values, inp.visual)
    merged = ~torch.isin(choice.src, choice.keep)
    assert torch.equal(choice.absorbed, choice.src[merged]) and torch.equal(choice.absorber, choice.dest[merged])


def _video_input(frames=4, per_frame=16, dim=16, keep=0.25, still=1.0) -> StageInput:
    """One video whose first ``still`` share of spatial tokens never change across frames."""
    torch.manual_seed(0)
    base = torch.randn(per_frame, dim)
    video = base.expand(frames, -1, -1).clone()
    moving = int(per_frame * (1 - still))
    if moving:
        video[:, per_frame - moving :] = torch.randn(frames, moving, dim)
    hidden = torch.cat([torch.randn(2, dim), video.flatten(0, 1), torch.randn(3, dim)])
    n = frames * per_frame
    return StageInput(
        hidden=hidden,
        visual=torch.arange(2, 2 + n),
        text=torch.cat([torch.arange(2), torch.arange(2 + n, 5 + n)]),
        keep=keep,
        final_norm=lambda x: x,
        vision_score=torch.rand(n),
        videos=[torch.arange(2, 2 + n).view(frames, per_frame)],
    )


def test_holitom_static_merge_never_keeps_fewer_than_asked():
    from mmaccel.prune.holitom import HoliTom

    for keep in (0.5, 0.25, 0.1):
        # A still video: merging every static token over the 4 frames would leave 16 of 64 at any keep; at
        # keep 0.5 the budget caps the static merge, below 0.25 clustering the window means goes further.
        choice = HoliTom(keep).outer(_video_input(keep=keep))
        assert abs(choice.keep.unique().numel() - round(64 * keep)) <= 1
    # Half the tokens move: static merging alone saves 24 of 64, pruning the dynamic ones does the rest (each
    # frame's share is rounded up).
    choice = HoliTom(0.25).outer(_video_input(keep=0.25, still=0.5))
    assert 16 <= choice.keep.unique().numel() <= 20


def test_siglip_probe_scores_are_the_mean_attention_each_patch_receives():
    """The probe rebuilds VisionZip's and HoliTom's vision scores from q/k projections, many frames at a time;
    they must equal what an eager attention layer reports."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import tiny_onevision

    from mmaccel.prune import families
    from mmaccel.prune.families import detect_family, make_probe

    model = tiny_onevision()
    probe = make_probe(detect_family(model))
    handles = probe.install()
    pixels = torch.randn(5, 3, 32, 32)  # five frames
    tower = model.model.vision_tower
    tower.set_attn_implementation("eager")
    old, families._MAP_ELEMENTS = families._MAP_ELEMENTS, 2 * 4 * 16 * 16  # two frames per step: 3 steps
    try:
        with torch.no_grad():
            out = tower(pixels, output_attentions=True)
        side = probe._patch_side()
    finally:
        families._MAP_ELEMENTS = old
        for h in handles:
            h.remove()
    expected = out.attentions[-1].sum(1).mean(1)  # (frames, patches): summed over heads, mean over queries
    torch.testing.assert_close(side[..., 0], expected)
