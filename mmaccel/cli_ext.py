"""Subcommands contributed by modalities and services (each adds its parsers; imports stay lazy)."""

EXTENSIONS: list = []
