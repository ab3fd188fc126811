"""``mmaccel demo``: checks of the host and port before Gradio starts (registration imports nothing heavy)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import socket
import sys

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Refuse a port outside 1-65535 or one something already listens on (``--port`` named in the error)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the server binds (SO_REUSEADDR): a listener refuses it, a just-stopped demo's TIME_WAIT does not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ValueError(f"--port {port} is in use on {host} ({err.strerror}); choose another --port") from None


def _demo(args: argparse.Namespace) -> int:
    check_port(args.host, args.port)
    if not is_loopback(args.host):
        print(
            f"mmaccel: warning: --host {args.host} is not a loopback address: anyone who reaches it can use the "
            "demo, which has no authentication",
            file=sys.stderr,
        )
    # found, not imported: building the page imports it (seconds), and a refusal above needs none of it
    if importlib.util.find_spec("gradio") is None:
        raise ValueError("mmaccel demo needs gradio: pip install 'mmaccel[demo]'")
    from .demo import build_demo, launch

    demo = build_demo(bench_json=args.bench_json)
    launch(demo, args.host, args.port)
    return 0


def register(commands) -> None:
    d = commands.add_parser(
        "demo",
        help="a Gradio page: plain AR and a method side by side on one seed (127.0.0.1 by default)",
        description="Start the demo page. It binds 127.0.0.1 unless --host says otherwise, and uses no network.",
    )
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    d.add_argument("--port", type=int, default=7860, help="port to bind (default: 7860)")
    d.add_argument("--bench-json", default=None, help="a bench JSON whose trade-off plot the page opens with")
    d.set_defaults(func=_demo)
