"""The Markdown table of ``mmaccel bench prune`` records, for the terminal, model cards and reports."""

from __future__ import annotations

from typing import Any


def markdown_table(records: list[dict]) -> str:
    """The records as a Markdown table (for model cards and reports).

    Each TTFT cell shows both sides of the row's paired measurement, unpruned -> pruned, next to the speed-up
    that divides them, so no figure in a row is read against a time measured elsewhere.
    """
    lines = [
        "| method | keep | visual tokens kept | prefill FLOPs | TTFT (ms), unpruned -> pruned | TTFT speedup "
        "| batched TTFT (ms), unpruned -> pruned | batched speedup | accuracy | agreement |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        method = variant_label(r["method"], r.get("params", {}))
        if "error" in r:
            lines.append(f"| {method} | {r['keep']} | - | - | - | - | - | - | not applicable | - |")
            continue
        batched = "- | -"
        if r.get("batch_ttft_s"):
            batched = (
                f"{_ms(r['reference_batch_ttft_s'])} -> {_ms(r['batch_ttft_s'])} (batch {r['batch_size']}) "
                f"| {r['batch_ttft_speedup']:.2f}x"
            )
        lines.append(
            f"| {method} | {r['keep']} | {r['visual_tokens_kept']:.1f} of {r['visual_tokens']:.0f} "
            f"| {r['flops_ratio']:.1%} | {_ms(r['reference_ttft_s'])} -> {_ms(r['ttft_s'])} "
            f"| {r['ttft_speedup']:.2f}x | {batched} | {r['accuracy']:.1%} | {r['agreement']:.1%} |"
        )
    return "\n".join(lines)


def variant_label(method: str, params: dict[str, Any]) -> str:
    """``divprune proportional=true``: a method and the parameters it was benchmarked with."""
    return method + "".join(f" {k}={_show(v)}" for k, v in params.items())


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
