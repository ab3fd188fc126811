"""``mmaccel sample MODALITY``: the flags every modality's sampler shares, and the command's common steps.

A modality registers its parser through the ``mmaccel.sample`` entry-point group (value: ``register(sample)``,
``sample`` being the subparsers of ``mmaccel sample``), adds these flags with :func:`add_sample_arguments` and its
own sampling flags, and in its command builds a :class:`mmaccel.sample.Sampler` and calls :func:`run_sample_command`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .params import split_assignment


def _param(text: str) -> tuple[str, str]:
    try:
        return split_assignment(text, "--param")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_sample_arguments(parser: argparse.ArgumentParser, default_method: str) -> None:
    """The flags of every ``mmaccel sample`` command (model, method, conditions, seeds, folder, sharding)."""
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--method", default=None, help=f"acceleration method, listed below (default: {default_method})")
    parser.add_argument(
        "--param", type=_param, action="append", help="a method parameter, name=value (repeatable; listed below)"
    )
    parser.add_argument("--num-samples", type=int, required=True, help="samples to write, indices 0..N-1")
    parser.add_argument(
        "--class",
        dest="classes",
        default=None,
        help="comma-separated class labels (indices or names); sample i takes label i mod their number "
        "(default: every class in turn)",
    )
    parser.add_argument("--prompt-file", default=None, help="text-to-X models: one prompt a line, sample i takes i mod")
    parser.add_argument("--out", required=True, help="the sample folder: NNNNNN_seedS files, samples.json, samples.npz")
    parser.add_argument("--npz", action="store_true", help="also write OUT/samples.npz (arr_0, ADM evaluator layout)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (same settings and seeds)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="samples generated together; part of the run (default: 16)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sample i uses seed + i (default: 0)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads per process; the files depend on it (float reductions split by thread), so keep it "
        "fixed across runs and shards (default: 1, what torchrun gives each rank)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda:LOCAL_RANK when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_sample_parser(
    sample: Any, name: str, help: str, examples: str, default_method: str, inits: Sequence[str] | None = None
) -> argparse.ArgumentParser:
    """``mmaccel sample NAME``'s parser with the shared flags, its examples as the epilog, and (given the
    modality's Jacobi ``inits``) every method's parameters in ``--help``."""
    from .cli import with_method_help

    parser = sample.add_parser(name, help=help, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    if inits is not None:
        with_method_help(parser, tuple(inits))
    add_sample_arguments(parser, default_method)
    return parser


def add_sampling_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any], guidance: bool = True) -> None:
    """``--temperature``, ``--top-k``, ``--top-p`` (and ``--guidance-scale``), their defaults in the help; read
    back with :func:`sampling_settings`."""
    if guidance:
        parser.add_argument("--guidance-scale", type=float, default=None,
                            help=f"classifier-free guidance scale (default: {defaults['guidance_scale']})")
    parser.add_argument("--temperature", type=float, default=None,
                        help=f"sampling temperature, >= 0; 0 is greedy (default: {defaults['temperature']})")
    parser.add_argument("--top-k", type=int, default=None, help="sample only among the k likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling: keep mass p, in (0, 1]")


def sampling_settings(args: argparse.Namespace, defaults: dict[str, Any], guidance: bool = True) -> dict[str, Any]:
    """The sampling flags of :func:`add_sampling_arguments`, a flag not given taking the modality's default."""
    keys = ("guidance_scale", "temperature", "top_k", "top_p") if guidance else ("temperature", "top_k", "top_p")
    values = {k: getattr(args, k) for k in keys}
    return {k: defaults.get(k) if v is None else v for k, v in values.items()}


def check_sample_arguments(args: argparse.Namespace) -> None:
    """Refusals that need nothing loaded: they come before any model is read or file written. Then pins torch's
    CPU threads to ``--threads``."""
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out!r} is a file, not a folder")
    if not out.exists() and not out.parent.is_dir():
        raise FileNotFoundError(f"--out {args.out!r}: its parent folder does not exist")
    if args.classes is not None and args.prompt_file is not None:
        raise ValueError("give --class or --prompt-file, not both")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)


def read_prompt_file(path: str) -> list[str]:
    """The non-empty lines of ``--prompt-file``."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--prompt-file {path!r}: {err}") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"--prompt-file {path!r} holds no prompt")
    return prompts


def cycle(values: Sequence[Any], n: int) -> list[Any]:
    """``values`` repeated in turn to length ``n``: sample ``i`` takes ``values[i % len(values)]``."""
    return [values[i % len(values)] for i in range(n)]


def class_conditions(
    text: str | None, num_classes: int, class_label: Callable[[int | str], int], n: int
) -> list[int]:
    """``--class`` of a class-conditional model: its comma-separated labels (indices or names, each turned into an
    index by the modality's ``class_label``, whose refusal is prefixed with ``--class``) cycled to ``n`` samples;
    without ``--class`` every class in turn."""
    if text is None:
        return cycle(range(num_classes), n)
    try:
        labels = [class_label(int(t) if t.strip().lstrip("-").isdigit() else t.strip()) for t in text.split(",")
                  if t.strip()]
    except ValueError as err:
        raise ValueError(f"--class: {err}") from None
    if not labels:
        raise ValueError(f"--class takes comma-separated labels, got {text!r}")
    return cycle(labels, n)


def method_spec(args: argparse.Namespace, default_method: str, inits: Sequence[str] | None = None) -> tuple[str, dict]:
    """``--method`` (a name, or a spec with parameters such as ``sjd:init=repeat``) merged with ``--param`` and,
    where the modality has the flag, ``--init`` (checked against ``inits``): the method name and its typed
    parameters."""
    from .methods import check_params, parse_method

    name, params = parse_method(args.method or default_method, "--method")
    extra = dict(args.param or [])
    init = getattr(args, "init", None)
    if init is not None:
        if inits is not None and init not in inits:
            raise ValueError(f"--init must be one of {', '.join(inits)}, got {init!r}")
        extra["init"] = init
    return name, check_params(name, {**params, **extra})


def run_sample_command(
    args: argparse.Namespace,
    modality: str,
    run_settings: dict[str, Any],
    conditions: Sequence[Any],
    make_sampler: Callable[[], Any],
    ranks: Any,
    suffix: str = ".png",
    load_array: Callable[[Path], Any] | None = None,
    pack: Callable[[list[Any]], dict[str, Any]] | None = None,
) -> int:
    """Run ``mmaccel sample MODALITY`` once the modality has its settings, its conditions and its sampler;
    ``load_array`` and ``pack`` say how its files become ``samples.npz`` (see :func:`mmaccel.sample.run_samples`)."""
    from .sample import SampleRun, run_samples

    run = SampleRun(
        modality=modality,
        run=run_settings,
        seeds=[args.seed + i for i in range(args.num_samples)],
        conditions=list(conditions),
        batch_size=args.batch_size,
    )
    record = run_samples(
        make_sampler,
        run,
        args.out,
        ranks=ranks,
        suffix=suffix,
        load_array=load_array,
        pack=pack,
        npz=args.npz,
        resume=args.resume,
        progress=not args.no_progress,
    )
    if ranks.is_main:
        stats = list(record["samples"].values())
        forwards = sum(s["forwards"] for s in stats) / len(stats)
        accepted = sum(s["accepted_length"] for s in stats) / len(stats)
        npz = f", {Path(args.out) / record['npz']}" if record["npz"] else ""
        print(
            f"{run_settings['method']}: {len(stats)} samples in {args.out} ({ranks.world} process"
            f"{'es' if ranks.world > 1 else ''}); {forwards:.1f} forwards and {accepted:.2f} tokens accepted per "
            f"forward on average; wrote samples.json{npz}",
            file=sys.stdout,
        )
    return 0
