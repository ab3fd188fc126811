"""A tiny random image model (VQ, GPT, draft) saved to disk, plus the shipped classifier, for pipeline tests."""

import shutil

import pytest
import torch
from safetensors.torch import save_file

from mmaccel.image.llamagen import LlamaGenGPT, gpt_config
from mmaccel.image.pipeline import DEFAULT_WEIGHTS
from mmaccel.models.vq import VQConfig, VQModel


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_image_model")
    vq = VQModel(VQConfig.named("VQ-tiny"))
    vq.save_pretrained(folder, "vq")
    grid = vq.config.image_size // vq.config.downsample
    for name, layers in (("gpt", 2), ("draft", 1)):
        config = gpt_config("GPT-Tiny", n_layer=layers, vocab_size=vq.config.codebook_size, block_size=grid * grid)
        gpt = LlamaGenGPT(config)
        save_file(gpt.state_dict(), str(folder / f"{name}.safetensors"))
        config.save(folder / f"{name}_config.json")
    for name in ("classifier.safetensors", "classifier_config.json"):
        shutil.copy(DEFAULT_WEIGHTS / name, folder / name)
    return folder
