"""The Markdown table of ``mmaccel bench prune`` records, for the terminal, model cards and reports."""

from __future__ import annotations

from typing import Any


def markdown_table(records: list[dict]) -> str:
    """The records as a Markdown table (for model cards and reports)."""
    lines = [
        "| method | keep | visual tokens kept | prefill FLOPs | TTFT (ms) | TTFT speedup | batched TTFT (ms) "
        "| batched speedup | accuracy | agreement |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        method = r["method"] + "".join(f" {k}={_show(v)}" for k, v in r.get("params", {}).items())
        if "error" in r:
            lines.append(f"| {method} | {r['keep']} | - | - | - | - | - | - | not applicable | - |")
            continue
        batched = "- | -"
        if r.get("batch_ttft_s"):
            batched = f"{r['batch_ttft_s'] * 1e3:.1f} (batch {r['batch_size']}) | {r['batch_ttft_speedup']:.2f}x"
        lines.append(
            f"| {method} | {r['keep']} | {r['visual_tokens_kept']:.1f} of {r['visual_tokens']:.0f} "
            f"| {r['flops_ratio']:.1%} | {r['ttft_s'] * 1e3:.1f} | {r['ttft_speedup']:.2f}x | {batched} "
            f"| {r['accuracy']:.1%} | {r['agreement']:.1%} |"
        )
    return "\n".join(lines)


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
