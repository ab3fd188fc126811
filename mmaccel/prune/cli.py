"""``mmaccel bench prune``: every pruning method x keep ratio on one model, in one process.

Every value is read here as text and checked before any work starts, so that a bad one ends in the CLI's
``mmaccel: error: ...`` (exit 2) naming its flag, never in a traceback, a silent default or a "not
applicable" row.
"""

from __future__ import annotations

import argparse

#: The flags that set each argument of :func:`mmaccel.prune.bench_arguments.check_arguments`, named in its errors.
FLAGS = {
    "methods": "--methods",
    "keeps": "--keep",
    "params": "--param",
    "limit": "--limit",
    "batch_size": "--batch-size",
}


def _raw_params(texts: list[str]) -> dict[str, dict[str, str]]:
    """``--param`` values, ``METHOD:NAME=VALUE`` each, still text; a later value of one name wins."""
    from mmaccel.params import split_spec

    raw: dict[str, dict[str, str]] = {}
    for text in texts:
        method, values = split_spec(text, "--param")
        if not values:
            raise ValueError(f"--param looks like method:name=value (holitom:tau=0.9), got {text!r}")
        raw.setdefault(method, {}).update(values)
    return raw


def _bench(args: argparse.Namespace) -> int:
    from mmaccel.io import check_writable, write_json_atomic

    from .bench import run_bench
    from .bench_arguments import check_arguments
    from .table import markdown_table

    methods, keeps, params, limit, batch_size = check_arguments(
        args.methods, args.keep, _raw_params(args.param or []), args.limit, args.batch_size, FLAGS
    )
    if args.json:
        check_writable(args.json)
    records = run_bench(
        args.model,
        methods,
        keeps,
        args.questions,
        None,
        limit=limit,
        batch_size=batch_size,
        params=params,
        progress=True,
    )
    print(markdown_table(records))
    if args.json:
        write_json_atomic(args.json, records)
    return 0


def register(commands, generate, bench) -> None:
    b = bench.add_parser("prune", help="visual-token pruning: accuracy, FLOPs and TTFT per method and keep ratio")
    b.add_argument(
        "--model",
        default="default",
        help="a LLaVA / LLaVA-OneVision / Qwen2-VL folder, or 'default' (the image testbed) or 'default-video'",
    )
    b.add_argument(
        "--methods",
        default="none,fastv,visionzip,divprune,dart,tome,holitom",
        help="comma-separated; a method may carry its own parameters, e.g. divprune:proportional=true",
    )
    b.add_argument("--keep", default="0.5,0.25,0.1", help="comma-separated keep ratios in (0, 1]")
    b.add_argument("--questions", default=None, help="JSON-lines question file (default: the testbed's held-out)")
    b.add_argument("--limit", default=None, help="use only the first N questions (N >= 1; default: all)")
    b.add_argument("--batch-size", default="8", help="requests per batch for the batched TTFT (1: skip it)")
    b.add_argument(
        "--param",
        action="append",
        help="a method's parameter, method:name=value (repeatable), typed by the method's signature",
    )
    b.add_argument("--json", help="write the records here")
    b.set_defaults(func=_bench)
