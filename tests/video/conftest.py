"""A tiny random video model (Llama GPT + VQ-tiny) saved to disk, for pipeline, CLI and lossless tests."""

import pytest
import torch

from mmaccel.video.testing import save_tiny_video_model

torch.set_num_threads(1)  # two shared cores: more threads only contend


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return save_tiny_video_model(tmp_path_factory.mktemp("tiny_video_model"), frames=2, grid=4, num_classes=3)
