"""VideoLayout maps flat positions to (frame, row, column) and back, and reshapes acceptance maps."""

import pytest
import torch

from mmaccel.video.layout import VideoLayout


def test_position_and_index_round_trip():
    lay = VideoLayout(3, 2, 4)
    i = torch.arange(lay.num_tokens)
    t, h, w = lay.position(i)
    assert t.tolist()[:9] == [0] * 8 + [1] and h.tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1] and w.tolist()[5] == 1
    assert torch.equal(lay.index(t, h, w), i)


def test_acceptance_maps_and_frame_steps():
    lay = VideoLayout(2, 1, 2)
    accept = torch.tensor([[1, 2, 2, 5], [1, 1, 3, 3]])
    assert lay.acceptance_maps(accept).shape == (2, 2, 1, 2)
    assert lay.frame_steps(accept).tolist() == [[2, 3], [1, 2]]


@pytest.mark.parametrize("bad", [dict(frames=0, height=2, width=2), dict(frames=2, height=-1, width=2),
                                 dict(frames=2.5, height=2, width=2)])
def test_bad_layout_refused(bad):
    with pytest.raises(ValueError, match="VideoLayout"):
        VideoLayout(**bad)


def test_out_of_range_and_bad_shapes():
    lay = VideoLayout(2, 2, 2)
    with pytest.raises(ValueError, match="index"):
        lay.position(torch.tensor([8]))
    with pytest.raises(ValueError, match="tokens"):
        lay.grids(torch.zeros(1, 7, dtype=torch.long))
