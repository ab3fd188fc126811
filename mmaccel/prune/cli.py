"""``mmaccel bench prune``: every pruning method x keep ratio on one model, in one process."""

from __future__ import annotations

import argparse

from mmaccel.cli import number_or_text


def _method_param(text: str) -> tuple[str, str, object]:
    """``METHOD:NAME=VALUE`` -> (method, name, value), the value an int or float where it reads as one."""
    if ":" not in text or "=" not in text.split(":", 1)[1]:
        raise argparse.ArgumentTypeError(f"--param looks like method:name=value (holitom:tau=0.9), got {text!r}")
    method, rest = text.split(":", 1)
    name, value = rest.split("=", 1)
    return method, name, number_or_text(value)


def _bench(args: argparse.Namespace) -> int:
    from mmaccel.io import check_writable, write_json_atomic

    from .bench import run_bench
    from .table import markdown_table

    if args.json:
        check_writable(args.json)
    params: dict[str, dict] = {}
    for method, name, value in args.param or []:
        params.setdefault(method, {})[name] = value
    records = run_bench(
        args.model,
        args.methods,
        args.keep,
        args.questions,
        None,
        limit=args.limit,
        batch_size=args.batch_size,
        params=params,
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
    b.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    b.add_argument("--batch-size", type=int, default=8, help="requests per batch for the batched TTFT (1: skip it)")
    b.add_argument(
        "--param", type=_method_param, action="append", help="a method's parameter, method:name=value (repeatable)"
    )
    b.add_argument("--json", help="write the records here")
    b.set_defaults(func=_bench)
