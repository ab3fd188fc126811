"""Tiny random models saved to disk: the video GPT + VQ-tiny (pipeline, CLI and lossless tests), and folders of the
real families' classes (Emu3, Cosmos AR) for their loader and CLI tests."""

import pytest
import torch

from mmaccel.video.testing import save_tiny_video_model
from mmaccel.video.testing.cosmos import save_tiny_cosmos
from mmaccel.video.testing.emu3 import save_tiny_emu3

torch.set_num_threads(1)  # two shared cores: more threads only contend


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return save_tiny_video_model(tmp_path_factory.mktemp("tiny_video_model"), frames=2, grid=4, num_classes=3)


@pytest.fixture(scope="session")
def emu3_dir(tmp_path_factory):
    return save_tiny_emu3(tmp_path_factory.mktemp("tiny_emu3"))


@pytest.fixture(scope="session")
def cosmos_dir(tmp_path_factory):
    return save_tiny_cosmos(tmp_path_factory.mktemp("tiny_cosmos"))
