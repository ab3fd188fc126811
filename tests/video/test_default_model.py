"""The shipped default model (video/weights) loads and generates a clip of the declared shape."""

import numpy as np

from mmaccel.video.model import WEIGHTS_DIR
from mmaccel.video.pipeline import VideoARPipeline


def test_shipped_weights_load_and_generate():
    pipe = VideoARPipeline.from_pretrained()
    assert pipe.cache_dir == WEIGHTS_DIR and pipe.layout.num_tokens == 512
    out = pipe(3, method="mc-sjd", init="temporal-repeat", seed=0, progress=False)
    clip = out.frames[0]
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    assert out.acceptance_maps.shape == (1, 8, 8, 8)
    assert 1 <= out.stats[0]["steps"] <= 512


def test_eval_gpt_reports_loss_and_entropy(model_dir):
    from mmaccel.video.training.eval_gpt import evaluate

    r = evaluate(model_dir, clips=2, batch=2)
    assert 0 < r["entropy"] and 0 < r["val_loss"] < 20 and r["params"] > 0
