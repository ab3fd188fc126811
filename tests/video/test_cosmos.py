"""Cosmos-Predict1 AR on a tiny random network saved under the official parameter names: loading, the 3-D RoPE
and absolute embedding against the official tables, greedy speculative == greedy AR at batch 2 with different
conditioning lengths, and refusals."""

import json

import pytest
import torch

from mmaccel.checkpoint import CheckpointError
from mmaccel.methods import build_decoder
from mmaccel.sampling import SamplingConfig
from mmaccel.video.cosmos import Rope3D, cosmos_config, load_cosmos_ar, sincos_3d
from mmaccel.video.testing.cosmos import PARAMS, save_tiny_cosmos
from mmaccel.video.testing.cosmos import official_state as _official_state


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_cosmos(tmp_path_factory.mktemp("tiny_cosmos"))


def test_rope_matches_the_official_table():
    # cosmos1 RotaryPositionEmbedding.compute_freqs ("3D"): cat([t, h, w] * 2) of outer(seq, inv_freq) per axis.
    T, H, W, hd, theta = 3, 2, 3, 12, 10000.0
    dim_h = hd // 6 * 2
    dim_t = hd - 2 * dim_h
    sp = 1.0 / theta ** (torch.arange(0, dim_h, 2)[: dim_h // 2].float() / dim_h)
    tp = 1.0 / theta ** (torch.arange(0, dim_t, 2)[: dim_t // 2].float() / dim_t)
    seq = torch.arange(max(T, H, W)).float()
    et, eh, ew = torch.outer(seq[:T], tp), torch.outer(seq[:H], sp), torch.outer(seq[:W], sp)
    parts = [
        et[:, None, None].expand(T, H, W, -1),
        eh[None, :, None].expand(T, H, W, -1),
        ew[None, None].expand(T, H, W, -1),
    ]
    official = torch.cat(parts * 2, -1).reshape(T * H * W, hd)
    cos, sin = Rope3D(hd, [T, H, W], theta)(torch.zeros(1), torch.arange(T * H * W)[None])
    assert torch.allclose(cos[0], official.cos(), atol=1e-6) and torch.allclose(sin[0], official.sin(), atol=1e-6)


def test_absolute_embedding_matches_the_official_table():
    import numpy as np

    def one(d, pos):  # cosmos1 get_1d_sincos_pos_embed_from_grid
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], 1)

    T, H, W, d = 3, 2, 3, 48
    dh = d // 6 * 2
    t, h, w = np.meshgrid(np.arange(T), np.arange(H), np.arange(W), indexing="ij")
    official = np.concatenate([one(d - 2 * dh, t), one(dh, h), one(dh, w)], 1)
    assert np.allclose(sincos_3d(d, torch.arange(T * H * W), [T, H, W]).numpy(), official, atol=1e-6)


def test_official_names_load_into_the_network(folder):
    model = load_cosmos_ar(folder)
    assert model.model.config.model_type == "qwen3" and model.num_tokens == 18 and model.vocab_size == 40
    w = _official_state()["layers.1.feed_forward.w3.weight"]
    assert torch.equal(model.model.model.layers[1].mlp.up_proj.weight, w)


@pytest.mark.parametrize("method", ["sjd:init=temporal-repeat", "mc-sjd:init=temporal-repeat:window=8", "greedy"])
def test_greedy_identical_to_ar(folder, method):
    from mmaccel.methods import parse_method
    from mmaccel.video.layout import VideoLayout
    from mmaccel.video.temporal import video_inits

    model = load_cosmos_ar(folder)
    inits = video_inits(VideoLayout(*model.latent_shape), model.vocab_size)
    prompt = model.prompt([[3, 7, 1, 0, 5, 9], [2, 2, 8]])  # one latent frame, and half of one
    n = model.num_tokens - 6
    greedy = SamplingConfig(0.0)
    ar = build_decoder(model, "ar", sampling=greedy).generate(prompt, n, seeds=[0, 1])
    name, params = parse_method(method)
    out = build_decoder(model, name, params, sampling=greedy, inits=inits).generate(prompt, n, seeds=[0, 1])
    assert torch.equal(out.tokens, ar.tokens)


def test_refusals(folder, tmp_path):
    with pytest.raises(CheckpointError, match="folder not found"):
        load_cosmos_ar(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps(PARAMS))
    with pytest.raises(CheckpointError, match="model.safetensors, model.pt"):
        load_cosmos_ar(tmp_path)
    torch.save({"tok_embeddings.weight": torch.zeros(40, 48)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt"):
        load_cosmos_ar(tmp_path)
    with pytest.raises(ValueError, match="YaRN"):
        cosmos_config({"apply_yarn": True})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="transformers config"):
        load_cosmos_ar(tmp_path)
    with pytest.raises(ValueError, match="conditioning tokens must be"):
        load_cosmos_ar(folder).prompt([[41]])
