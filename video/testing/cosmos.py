"""A tiny random Cosmos-Predict1 AR folder under the official parameter names (``config.json`` with the official
``ModelConfig`` fields, ``model.pt`` read with ``weights_only``), for the Cosmos tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

PARAMS = {"dim": 48, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden_size": 64, "vocab_size": 40,
          "video_latent_shape": [3, 2, 3], "apply_abs_pos_emb": True, "max_seq_len": 32}  # fmt: skip


def official_state(n_layers: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for :data:`PARAMS`, named as cosmos1's ``Transformer`` names them."""
    torch.manual_seed(seed)
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


def save_tiny_cosmos(folder: str | Path) -> Path:
    """Write ``config.json`` and ``model.pt`` (the official file name and format) into ``folder``."""
    folder = Path(folder)
    (folder / "config.json").write_text(json.dumps(PARAMS))
    torch.save(official_state(), folder / "model.pt")
    return folder
