"""``mmaccel sample speech``: a folder of WAVs, samples.json and an ``.npz`` of the waveforms, zero-padded, with
their ``lengths`` and ``sample_rate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmaccel.sample_cli import add_sample_parser, add_sampling_arguments, check_sample_arguments

EXAMPLES = """examples:
  mmaccel sample speech --method lantern:window=8 --num-samples 32 --npz --out speech/
  mmaccel sample speech --prompt-file sentences.txt --voice f1 --num-samples 16 --out speech/
  torchrun --nproc-per-node 2 -m mmaccel sample speech --method sjd:window=8 --num-samples 32 --out speech/
  mmaccel eval speech --samples speech/
"""
#: Text i of a run without --prompt-file is the default sentence grammar's draw from this seed + i (so a text does
#: not depend on --num-samples); the bench's and the training's sentences use other seeds.
TEXT_SEED = 700_000
SPEECH_DEFAULTS = {"temperature": 1.0, "top_k": None, "top_p": None}


def default_texts(n: int) -> list[str]:
    import random

    from .data import sentence

    return [sentence(random.Random(TEXT_SEED + i)) for i in range(n)]


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from mmaccel.sample import pack_padded
    from mmaccel.sample_cli import cycle, read_prompt_file, run_sample_command, sampling_settings
    from mmaccel.sample_distributed import launched_ranks

    from .codec import SAMPLE_RATE
    from .pipeline import SpeechARPipeline
    from .sampler import SpeechSampler, read_wave

    check_sample_arguments(args)
    if args.classes is not None:
        raise ValueError("--class: the speech model is text-to-speech; give --prompt-file (one text a line)")
    if args.top_p is not None:
        raise ValueError("--top-p: the speech stream decoder takes --temperature and --top-k only")
    texts = cycle(read_prompt_file(args.prompt_file), args.num_samples) if args.prompt_file else None
    ranks = launched_ranks(args.device)
    try:
        pipe = SpeechARPipeline.from_pretrained(args.model).to(ranks.device)
        if args.voice not in pipe.voices:
            raise ValueError(f"--voice: unknown voice {args.voice!r}; choose one of {pipe.voices}")
        # --param name=value joins the spec, the form the stream decoder reads (sjd:window=8:init=repeat)
        spec = ":".join([args.method or "ar", *(f"{k}={v}" for k, v in args.param or [])])
        sampling = sampling_settings(args, SPEECH_DEFAULTS, guidance=False)
        sampler = SpeechSampler(pipe, spec, args.voice, args.max_steps, **sampling)
        if texts is None:
            texts = default_texts(args.num_samples)
        for i, text in enumerate(texts):  # an unusable text fails before the folder is touched
            try:
                pipe.prompts([text], args.voice)
            except ValueError as err:
                raise ValueError(f"text {i} ({text!r}): {err}") from None
        settings = {
            "model": "default" if args.model is None else str(Path(args.model).resolve()),
            "method": spec,
            "voice": args.voice,
            "max_steps": args.max_steps,
            "sample_rate": SAMPLE_RATE,
            **sampling,
        }

        def pack(waves):
            return {**pack_padded(waves), "sample_rate": np.array(SAMPLE_RATE)}

        return run_sample_command(args, "speech", settings, texts, lambda: sampler, ranks, suffix=".wav",
                                  load_array=read_wave, pack=pack)
    finally:
        ranks.close()


def register(sample) -> None:
    help = "a folder of WAVs, samples.json and an .npz of the waveforms (padded, with lengths)"
    s = add_sample_parser(sample, "speech", help, EXAMPLES, "ar")
    s.add_argument("--voice", default="m1", help="voice: m1, m3, f1 or f3 for the default model (default: m1)")
    s.add_argument("--max-steps", type=int, default=None, help="steps (frames + codebooks - 1) at most")
    add_sampling_arguments(s, SPEECH_DEFAULTS, guidance=False)
    s.set_defaults(func=_sample)


__all__ = ["register"]
