"""`mmaccel bench core`: what verification costs next to the forward pass it rides on.

Each rule is timed on random target/draft distributions of the issue's size (vocabulary 16384, window 16,
batch 8) and compared with one verifying forward (batch 8, window + 1 new tokens over a 256-token context) of a
~50M-parameter Llama on this machine. Both are measured in the same process, back to back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ..acceptance import RULES, make_rule, rule_parameters
from ..models import HFCausalLM
from ..sampling import SamplingConfig, target_probs

RULE_NAMES = tuple(RULES)


def _time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: first calls allocate
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def reference_model(vocab: int = 16384, hidden_size: int = 512, layers: int = 10) -> HFCausalLM:
    """A randomly initialised Llama; the defaults give ~50M parameters at vocabulary 16384."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    return HFCausalLM(LlamaForCausalLM(config))


def run(
    vocab: int = 16384,
    window: int = 16,
    batch: int = 8,
    context: int = 256,
    k: int = 1000,
    repeats: int = 10,
    hidden_size: int = 512,
    layers: int = 10,
) -> list[dict[str, Any]]:
    """Time every rule and one verifying forward; return one record per rule."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, window + 1, vocab, generator=gen) * 3
    p = target_probs(logits, SamplingConfig(temperature=1.0))
    q = target_probs(logits[:, :window] + torch.randn(batch, window, vocab, generator=gen), SamplingConfig())
    drafts = torch.multinomial(q.view(-1, vocab), 1, generator=gen).view(batch, window)
    u_accept, u_sample = torch.rand(batch, window, generator=gen), torch.rand(batch, generator=gen)
    embeddings = torch.nn.functional.normalize(torch.randn(vocab, 8, generator=gen), dim=-1)

    model = reference_model(vocab, hidden_size, layers)
    params = sum(t.numel() for t in model.model.parameters())
    cache = model.new_cache(batch, context + window + 1)
    ctx_positions = torch.arange(context).expand(batch, context)
    model.forward(torch.randint(vocab, (batch, context), generator=gen), ctx_positions, cache)
    tokens = torch.randint(vocab, (batch, window + 1), generator=gen)
    positions = context + torch.arange(window + 1).expand(batch, window + 1)
    forward_s = _time(lambda: model.forward(tokens, positions, cache), max(3, repeats // 2))

    records = []
    for name in RULE_NAMES:
        params_ = {"k": k} if "k" in rule_parameters(name) else {}  # LANTERN's neighbour count
        build_start = time.perf_counter()
        rule = make_rule(name, embeddings if RULES[name].table is not None else None, **params_)
        build_s = time.perf_counter() - build_start
        rule_s = _time(lambda rule=rule: rule(p, q, drafts, u_accept, u_sample), repeats)
        records.append(
            {
                "rule": name,
                "rule_ms_per_step": rule_s * 1e3,
                "rule_us_per_token": rule_s * 1e6 / (batch * window),
                "forward_ms_per_step": forward_s * 1e3,
                "ratio_to_forward": rule_s / forward_s,
                "setup_s": build_s,
                "model_params": params,
                "vocab": vocab,
                "window": window,
                "batch": batch,
            }
        )
    return records


def format_table(records: list[dict[str, Any]]) -> str:
    r0 = records[0]
    lines = [
        f"verification cost: vocab {r0['vocab']}, window {r0['window']}, batch {r0['batch']}; "
        f"one verify forward of a {r0['model_params'] / 1e6:.0f}M-param Llama = {r0['forward_ms_per_step']:.1f} ms",
        f"{'rule':<10} {'ms/step':>9} {'us/token':>9} {'% of forward':>13} {'setup s':>8}  target <10%",
    ]
    for r in records:
        pct = 100 * r["ratio_to_forward"]
        lines.append(
            f"{r['rule']:<10} {r['rule_ms_per_step']:>9.2f} {r['rule_us_per_token']:>9.2f} {pct:>12.1f}% "
            f"{r['setup_s']:>8.2f}  {'ok' if pct < 10 else 'OVER'}"
        )
    return "\n".join(lines)
