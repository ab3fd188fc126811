"""The per-mesh stats dict every mesh pipeline reports (the default GPT's, LLaMA-Mesh's and MeshAnything's)."""

from __future__ import annotations

from typing import Any

from .tokenizer import DecodeReport


def mesh_stats(
    method: str,
    seed: int,
    tokens: int,
    steps: int,
    end_tokens: int,
    steps_to_end: int,
    report: DecodeReport,
    **extra: Any,
) -> dict[str, Any]:
    """One generated mesh's stats: the forwards over the whole run (``tokens`` / ``steps``) and up to its end
    (``end_tokens`` / ``steps_to_end``, the end token included), its decode ``report``, then ``extra``."""
    return {
        "method": method,
        "seed": seed,
        "tokens": tokens,
        "steps": steps,
        "step_compression": tokens / steps,
        "end_tokens": end_tokens,
        "steps_to_end": steps_to_end,
        "step_compression_to_end": end_tokens / steps_to_end,
        "faces": report.faces_kept,
        "valid": report.valid,
        "report": report.to_dict(),
        **extra,
    }
