"""The ``mmaccel`` command line: ``generate`` and ``bench`` subcommands (modalities add their own)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .io import check_writable, write_json_atomic


class _MethodHelpParser(argparse.ArgumentParser):
    """A parser whose help ends with the method table; built only when help is asked for, so that registering
    the subcommands imports nothing heavy."""

    inits: tuple[str, ...] = ("random",)

    def format_help(self) -> str:
        from .methods import methods_help

        return f"{super().format_help()}\n{methods_help(self.inits)}\n"


def with_method_help(parser: argparse.ArgumentParser, inits: tuple[str, ...] = ("random",)) -> argparse.ArgumentParser:
    """Make ``parser``'s ``--help`` list every method with its parameters, their types, ranges and defaults;
    ``inits`` names the modality's Jacobi initialisations."""
    parser.__class__ = _MethodHelpParser
    parser.inits = inits
    return parser


def param_argument(text: str) -> tuple[str, str]:
    """``--param name=value`` as an argparse ``type``: a malformed one is a usage error naming ``--param``."""
    from .params import split_assignment

    try:
        return split_assignment(text, "--param")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def class_argument(text: str) -> int | str:
    """``--class`` as an argparse ``type``: an index, or a class name for the pipeline to resolve."""
    return int(text) if text.lstrip("-").isdigit() else text


def count_argument(value: int, flag: str) -> int:
    """``value`` of a count option (``--num-videos``, ``--num-meshes``), refused below 1."""
    if value < 1:
        raise ValueError(f"{flag} must be >= 1, got {value}")
    return value


def batch_sizes_argument(text: str, flag: str = "--batch-sizes") -> list[int]:
    """``"1,8"`` -> ``[1, 8]``; anything but comma-separated integers >= 1 is refused, naming ``flag``."""
    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"{flag} takes integers >= 1, got {text!r}")
    return sizes


def method_specs(text: str, check: Callable[[str], object]) -> list[str]:
    """``--methods "ar,sjd:window=8"`` -> its specs, each passed to ``check`` (the modality's parser, which raises
    on a bad one) so that a bad method fails before anything loads."""
    specs = [m.strip() for m in text.split(",") if m.strip()]
    for spec in specs:
        check(spec)
    return specs


def output_files(
    out: str | Path, count: int, suffixes: tuple[str, ...], what: str, beside: tuple[str, ...] = (".png", ".json")
) -> list[tuple[Path, ...]]:
    """The files of ``count`` outputs for ``--out``: ``OUT`` and ``OUT`` with each of ``beside``'s suffixes for one
    output, ``OUT_i.*`` for several. Refused before any work unless ``OUT`` ends with one of ``suffixes`` (``what``
    names the kind of file) and every file can be written (a missing folder, a collision)."""
    out = Path(out)
    if out.suffix.lower() not in suffixes:
        raise ValueError(
            f"--out {str(out)!r}: unsupported {what} file extension {out.suffix or '(none)'!r}; use one of "
            f"{', '.join(suffixes)} (the {' and '.join(s.lstrip('.').upper() for s in beside)} files are written "
            "beside it)"
        )
    stems = [out] if count == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(count)]
    files = [(p, *(p.with_suffix(s) for s in beside)) for p in stems]
    for group in files:
        for path in group:
            check_writable(path)
    return files


def _version() -> str:
    try:
        return version("mmaccel")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def _bench_core(args: argparse.Namespace) -> int:
    from .bench import core

    if args.json:
        check_writable(args.json)
    records = core.run(vocab=args.vocab, window=args.window, batch=args.batch, k=args.k, repeats=args.repeats)
    print(core.format_table(records))
    if args.json:
        write_json_atomic(args.json, records)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmaccel", description="Fast autoregressive multimodal generation.")
    parser.add_argument("--version", action="version", version=f"mmaccel {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = sub.add_parser("generate", help="generate with an accelerated AR model")
    generate_sub = generate.add_subparsers(dest="modality", required=True, metavar="MODALITY")

    bench = sub.add_parser("bench", help="measure methods side by side in one process")
    bench_sub = bench.add_subparsers(dest="target", required=True, metavar="TARGET")
    core = bench_sub.add_parser("core", help="cost of each acceptance rule next to one model forward")
    core.add_argument("--vocab", type=int, default=16384)
    core.add_argument("--window", type=int, default=16)
    core.add_argument("--batch", type=int, default=8)
    core.add_argument("--k", type=int, default=1000, help="LANTERN neighbours")
    core.add_argument("--repeats", type=int, default=10)
    core.add_argument("--json", help="also write the records to this JSON file")
    core.set_defaults(func=_bench_core)

    sample = sub.add_parser("sample", help="write sample folders and ADM .npz files for evaluation (torchrun shards)")
    sample_sub = sample.add_subparsers(dest="modality", required=True, metavar="MODALITY")
    from .demo_cli import register as register_demo
    from .eval.cli import register as register_eval

    register_eval(sub)
    register_demo(sub)

    for extension in _extensions():
        extension(sub, generate_sub, bench_sub)
    for extension in _extensions("mmaccel.sample"):  # value: register(sample_subparsers)
        extension(sample_sub)
    return parser


def _extensions(group: str = "mmaccel.cli"):
    """Modalities register subcommands through the ``mmaccel.cli`` entry-point group (see pyproject.toml), so
    the core never imports a modality; each registers parsers only and imports its heavy code when run."""
    from importlib.metadata import entry_points

    return [ep.load() for ep in sorted(entry_points(group=group), key=lambda ep: ep.name)]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        print(f"mmaccel: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
