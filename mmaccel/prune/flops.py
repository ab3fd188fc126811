"""Analytic prefill FLOPs of the language model, from the number of tokens each decoder layer sees.

Per decoder layer holding ``n`` tokens (FLOPs = 2 x multiply-adds; hidden size ``d``, ``h`` query heads and
``g`` key/value heads of size ``k``, MLP width ``m``):

    projections  2 * n * d * (2 * h * k + 2 * g * k)     q and o; k and v (grouped-query aware)
    attention    2 * 2 * n * n * h * k                   q @ k^T and weights @ v, full square as in FastV
    MLP          2 * 3 * n * d * m                       gated MLP (gate, up, down) of Llama/Qwen2

plus ``2 * d * V`` for the LM head on the last position. This is the FastV paper's
``4nd^2 + 2n^2d + 2ndm`` per layer, extended to grouped-query attention and gated MLPs, in FLOPs rather
than multiply-adds. The vision encoder and the pruning methods' own selection work are not counted: they
are the same for all methods or negligible next to the LLM (measured TTFT includes both).
"""

from __future__ import annotations


def layer_flops(n: int, hidden: int, heads: int, kv_heads: int, head_dim: int, mlp: int) -> int:
    projections = 2 * n * hidden * (2 * heads * head_dim + 2 * kv_heads * head_dim)
    attention = 2 * 2 * n * n * heads * head_dim
    feed_forward = 2 * 3 * n * hidden * mlp
    return projections + attention + feed_forward


def prefill_flops(text_config, tokens_per_layer: list[int]) -> int:
    """Prefill FLOPs for one sequence whose layer ``i`` holds ``tokens_per_layer[i]`` tokens."""
    hidden = text_config.hidden_size
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or hidden // heads
    mlp = text_config.intermediate_size
    body = sum(layer_flops(n, hidden, heads, kv_heads, head_dim, mlp) for n in tokens_per_layer)
    return body + 2 * hidden * text_config.vocab_size
