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

PARAMS = {"dim": 48, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden_size": 64, "vocab_size": 40,
          "video_latent_shape": [3, 2, 3], "apply_abs_pos_emb": True, "max_seq_len": 32}  # fmt: skip


def _official_state(n_layers=2):
    """Random weights named as cosmos1's Transformer names them."""
    torch.manual_seed(0)
    d, hd, kv, f, v = 48, 12, 2, 64, 40
    state = {
        "tok_embeddings.weight": torch.randn(v, d),
        "norm.weight": 1 + 0.1 * torch.randn(d),
        "output.weight": torch.randn(v, d) * 0.2,
    }
    for i in range(n_layers):
        p = f"layers.{i}."
        state |= {
            p + "attention.wq.weight": torch.randn(4 * hd, d) * 0.2,
            p + "attention.wk.weight": torch.randn(kv * hd, d) * 0.2,
            p + "attention.wv.weight": torch.randn(kv * hd, d) * 0.2,
            p + "attention.wo.weight": torch.randn(d, 4 * hd) * 0.2,
            p + "attention.q_norm.weight": 1 + 0.1 * torch.randn(hd),
            p + "attention.k_norm.weight": 1 + 0.1 * torch.randn(hd),
            p + "feed_forward.w1.weight": torch.randn(f, d) * 0.2,
            p + "feed_forward.w2.weight": torch.randn(d, f) * 0.2,
            p + "feed_forward.w3.weight": torch.randn(f, d) * 0.2,
            p + "attention_norm.weight": 1 + 0.1 * torch.randn(d),
            p + "ffn_norm.weight": 1 + 0.1 * torch.randn(d),
        }
    return state


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_cosmos")
    (out / "config.json").write_text(json.dumps(PARAMS))
    torch.save(_official_state(), out / "model.pt")  # the official file name and format (read weights_only)
    return out


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
