"""Temporal Jacobi inits read only known tokens: the previous frame's (repeat, or a 3x3 neighbour), the token
above in the first frame, and a uniformly random token when nothing is known."""

import pytest
import torch

from mmaccel.video.layout import VideoLayout
from mmaccel.video.temporal import TemporalRepeat, TemporalSample, video_inits

LAY = VideoLayout(3, 2, 2)  # 4 tokens a frame


def _ctx(batch=2):
    return torch.arange(LAY.num_tokens).repeat(batch, 1) + 100


def test_repeat_copies_previous_frame():
    idx = torch.tensor([[4, 5, 6, 7], [8, 9, 10, 11]])
    out = TemporalRepeat(LAY, 50)(_ctx(), idx, torch.rand(2, 4))
    assert out.tolist() == [[100, 101, 102, 103], [104, 105, 106, 107]]


def test_window_longer_than_a_frame_goes_further_back():
    idx = torch.arange(4, 10)[None]
    out = TemporalRepeat(LAY, 50)(_ctx(1), idx, torch.rand(1, 6))
    assert out.tolist() == [[100, 101, 102, 103, 100, 101]]


def test_first_frame_uses_the_spatial_init():
    idx = torch.tensor([[1, 2, 3]])
    u = torch.tensor([[0.5, 0.0, 0.99]])
    out = TemporalRepeat(LAY, 50)(_ctx(1), idx, u)
    # vertical (default): 1: nothing above -> the last known token 100; 2: token 0 above -> 100;
    # 3: token 1 above is not known -> the last known token 100
    assert out.tolist() == [[100, 100, 100]]
    # horizontal-sample draws from the known tokens; with nothing known it is uniformly random
    ctx = _ctx(1)
    sample = TemporalRepeat(LAY, 50, "horizontal-sample")
    assert sample(ctx, torch.tensor([[0, 1]]), torch.tensor([[0.5, 0.99]])).tolist() == [[25, 49]]
    # frames after the first still copy the previous frame, whatever the first-frame init
    assert TemporalRepeat(LAY, 50, "horizontal")(ctx, torch.tensor([[4, 5]]), u[:, :2]).tolist() == [[100, 101]]


def test_spatial_init_matches_the_core_grid_init():
    from mmaccel.drafting.grid_init import HorizontalSample

    ctx, idx, u = _ctx(2), torch.tensor([[1, 2, 3], [2, 3, 4]]), torch.rand(2, 3)
    ours = video_inits(LAY, 50)["horizontal-sample"]()(ctx, idx, u)
    assert torch.equal(ours, HorizontalSample(50, LAY.width)(ctx, idx, u))


def test_init_names_listed_by_the_cli():
    from mmaccel.video.cli import INIT_NAMES
    from mmaccel.video.temporal import init_names

    assert INIT_NAMES == init_names() and set(video_inits(LAY, 5)) | {"random"} == set(INIT_NAMES)


def test_unknown_first_frame_init_is_refused():
    with pytest.raises(ValueError, match="first_frame"):
        TemporalRepeat(LAY, 5, "diagonal")


def test_sample_stays_in_previous_frame_neighbourhood():
    lay = VideoLayout(2, 4, 4)
    ctx = torch.arange(lay.num_tokens)[None].repeat(64, 1)
    idx = torch.full((64, 1), 16 + 5)  # frame 1, row 1, column 1
    out = TemporalSample(lay, 1000)(ctx, idx, torch.rand(64, 1))
    assert set(out.flatten().tolist()) <= {0, 1, 2, 4, 5, 6, 8, 9, 10} and len(set(out.flatten().tolist())) > 3


def test_inits_never_read_undefined_context():
    # Entries at and after index[:, 0] are garbage (-1): no init may return them.
    lay = VideoLayout(4, 3, 3)
    for name, make in video_inits(lay, 7).items():
        for start in range(lay.num_tokens - 3):
            ctx = torch.full((1, lay.num_tokens), -1)
            ctx[0, :start] = torch.arange(start) % 7
            out = make()(ctx, torch.arange(start, start + 12)[None].clamp(max=lay.num_tokens - 1), torch.rand(1, 12))
            assert int(out.min()) >= 0 and int(out.max()) < 7, (name, start)
