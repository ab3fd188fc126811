"""Frame / row / diagonal schedules: the window each step verifies, and the refusals."""

import pytest
import torch

from mmaccel.sampling import SamplingConfig
from mmaccel.video.layout import VideoLayout
from mmaccel.video.pipeline import VideoARPipeline
from mmaccel.video.schedule import FrameSchedule, ScheduledJacobiDrafter, split_schedule

LAY = VideoLayout(2, 4, 4)


def _lengths(kind, counts, window=64):
    return FrameSchedule(kind, LAY, window, ScheduledJacobiDrafter(window)).lengths(torch.tensor(counts)).tolist()


def test_frame_and_row_windows_end_on_the_block():
    assert _lengths("frame", [0, 1, 15, 16, 20]) == [16, 15, 1, 16, 12]
    assert _lengths("row", [0, 1, 3, 4, 6]) == [4, 3, 1, 4, 2]
    assert _lengths("frame", [1], window=5) == [5]  # never past the window


def test_diagonal_window_reaches_the_lowest_token_of_the_anti_diagonal():
    # (h, w) = (0, 3): (1, 2), (2, 1), (3, 0) follow every 3 tokens -> 10 tokens; (0, 0): itself; (3, 3): itself
    assert _lengths("diagonal", [3, 0, 15, 16 + 2]) == [10, 1, 1, 7]


def test_spec_carries_the_schedule():
    assert split_schedule("mc-sjd:schedule=frame:window=64") == ("mc-sjd:window=64", "frame")
    assert split_schedule("ar") == ("ar", None)
    with pytest.raises(ValueError, match="schedule must be one of"):
        split_schedule("sjd:schedule=zigzag")


def test_scheduled_decoder_varies_its_window(model_dir):
    pipe = VideoARPipeline.from_pretrained(model_dir)
    dec = pipe.build_decoder("mc-sjd", SamplingConfig(), 1.0, "row", init="temporal-repeat", window=8)
    out = dec.generate(pipe.model.class_prompt(torch.tensor([0, 1])), pipe.layout.num_tokens, seeds=[0, 1])
    assert max(out.stats.windows) <= 8 and len(set(out.stats.windows)) > 1


def test_schedule_refusals(model_dir):
    pipe = VideoARPipeline.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="Jacobi method"):
        pipe(0, method="ar", schedule="frame", progress=False)
    with pytest.raises(ValueError, match="window=auto"):
        pipe(0, method="sjd:window=auto", schedule="frame", progress=False)
    with pytest.raises(ValueError, match="schedule must be one of"):
        pipe(0, method="sjd", schedule="spiral", progress=False)
