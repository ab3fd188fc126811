"""``mmaccel generate speech`` and ``mmaccel bench speech``."""

from __future__ import annotations

import argparse
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac")


def _outputs(out: str) -> tuple[Path, Path, Path]:
    """The audio file, its acceptance-map PNG and its stats JSON; refused before any work when unusable."""
    from mmaccel.io import check_writable

    path = Path(out)
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise ValueError(f"--out must end in {' or '.join(AUDIO_SUFFIXES)}, got {out!r}")
    png = path.with_name(path.stem + "_acceptance.png")
    stats = path.with_suffix(".json")
    for p in (path, png, stats):
        check_writable(p)
    return path, png, stats


def _pipeline(args):
    from .pipeline import SpeechARPipeline

    family = getattr(args, "family", "default")
    if family != "default":
        from .families import FamilySpeech

        if args.model is None:
            raise ValueError(f"--family {family} needs --model DIR (a local checkpoint folder of the family)")
        return FamilySpeech.from_pretrained(family, args.model)
    if args.voice is None:
        args.voice = "m1"
    pipe = SpeechARPipeline.from_pretrained(args.model)
    if args.voice not in pipe.voices:
        raise ValueError(f"--voice: unknown voice {args.voice!r}; choose one of {pipe.voices}")
    return pipe


def _generate(args: argparse.Namespace) -> int:
    import soundfile

    from mmaccel.io import write_atomic, write_json_atomic

    from .acceptance_map import acceptance_image
    from .pipeline import describe

    path, png, stats = _outputs(args.out)
    pipe = _pipeline(args)
    out = pipe(
        args.text,
        args.voice,
        args.method,
        seeds=[args.seed],
        temperature=args.temperature,
        progress=not args.quiet,
        max_steps=args.max_steps,
    )
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    write_atomic(path, lambda tmp: soundfile.write(tmp, out.waveforms[0], out.sample_rate, format=fmt))
    image = acceptance_image(out.acceptance_maps[0])
    write_atomic(png, lambda tmp: image.save(tmp, format="PNG"))
    write_json_atomic(stats, {"text": args.text, "voice": args.voice, "method": args.method, **describe(out)})
    print(f"wrote {path} ({len(out.waveforms[0]) / out.sample_rate:.2f} s, {out.stats.nfe} forwards), {png}, {stats}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from mmaccel.cli import batch_sizes_argument, method_specs
    from mmaccel.io import check_writable, write_json_atomic

    from .bench import format_table, run

    if args.json:
        check_writable(args.json)
    if args.num_utterances < 2:
        raise ValueError(f"--num-utterances must be >= 2 (a Frechet distance needs a set), got {args.num_utterances}")
    batches = batch_sizes_argument(args.batch_sizes)
    pipe = _pipeline(args)
    specs = method_specs(args.methods, pipe.decoder)  # a bad method is refused before any generation
    records = run(pipe, specs, args.num_utterances, batches, args.voice, args.temperature, max_steps=args.max_steps)
    print(format_table(records))
    if args.json:
        write_json_atomic(args.json, records)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder (default: the shipped speech model)")
    p.add_argument(
        "--voice",
        default=None,
        help="voice: m1, m3, f1 or f3 for the default model (default: m1); CSM: a speaker number",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy (default: 1)")


def register(commands, generate, bench) -> None:
    g = generate.add_parser("speech", help="text to speech with the codec LM (plain AR or an accelerated method)")
    g.add_argument("--text", required=True, help='what to say, e.g. "the red square is left of the star"')
    g.add_argument(
        "--method",
        default="ar",
        help="method spec, e.g. sjd or sjd:window=8:init=repeat, or mctp[:rule=NAME] (MCTP heads, where the model "
        "folder has heads.safetensors; default rule sjd) (default: ar)",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, help="output .wav or .flac; OUT_acceptance.png and OUT.json beside it")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--max-steps", type=int, default=None, help="steps (frames + codebooks - 1) at most")
    g.add_argument(
        "--family",
        default="default",
        choices=["default", "musicgen", "csm", "dia", "moshi"],
        help="the shipped model (default), or a real family's checkpoint folder given by --model",
    )
    _common(g)
    g.set_defaults(func=_generate)

    b = bench.add_parser("speech", help="speech methods side by side: forwards, wall clock, ceilings, quality")
    b.add_argument("--methods", default="ar,sjd,greedy,lantern,gsd", help="comma-separated method specs")
    b.add_argument("--num-utterances", type=int, default=16)
    b.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    b.add_argument("--json", default=None, help="write the records here")
    b.add_argument("--max-steps", type=int, default=None, help="steps per utterance at most (default: the model's)")
    _common(b)
    b.set_defaults(func=_bench)


__all__ = ["register"]
