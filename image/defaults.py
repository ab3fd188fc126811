"""Sampling settings the default model is generated and measured with (CLI, bench, demo)."""

DEFAULTS = {"guidance_scale": 2.0, "temperature": 1.0, "top_k": None, "top_p": None}
