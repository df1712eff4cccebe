"""``filemem serve``: the command (registered through the ``filemem.commands`` entry point; layer L7).

Imports only the standard library and filemem at import time, so the command
line lists ``serve`` even without the ``server`` extra and says how to
install it when it is run. Invariant: binding anything but a loopback
address without a token file is refused before the store is opened.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import socket
import sys

from .._cli._base import EXIT_OK, EXIT_USAGE, Output, command, positive_int
from ._auth import add_token, ensure_token_file, load_tokens

__all__: list[str] = []

INSTALL_HINT = 'filemem serve needs the server extra: pip install "filemem[server]"'


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="store directory (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port to bind (default 8765; 0 picks a free one)")
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="bearer tokens (JSON, 0600); created with one admin token, printed once, if missing. "
        "Without it the server has no authentication and only binds loopback",
    )
    p.add_argument("--readonly", action="store_true", help="open the store read-only: every write is refused")
    p.add_argument(
        "--maintain",
        nargs="?",
        const=60.0,
        type=float,
        metavar="SECONDS",
        help="run store.maintain() in the background at low priority every SECONDS (default 60)",
    )
    p.add_argument(
        "--max-body-bytes", type=positive_int, default=1024 * 1024, help="larger request bodies get 413 (default 1 MiB)"
    )
    p.add_argument(
        "--retain", type=positive_int, default=10_000, help="change messages kept for resuming clients (default 10000)"
    )
    p.add_argument(
        "--ws-send-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a WebSocket client (code 4008) that takes no message for this long (default 10)",
    )
    p.add_argument("--lock-timeout", type=float, default=10.0, metavar="SECONDS", help="lock wait (default 10)")
    p.add_argument(
        "--add-token",
        metavar="NAME",
        help="add a token to --token-file and print it, then exit (with --scope and --prefix)",
    )
    p.add_argument("--scope", action="append", choices=["read", "write", "admin"], help="scope of --add-token")
    p.add_argument("--prefix", action="append", default=[], help="namespace prefix of --add-token (repeatable)")


@command(
    "serve",
    help="serve the store over HTTP and WebSocket (needs filemem[server])",
    description="Serve the store over HTTP and WebSocket: records, search, batch, sessions, live changes with "
    "resume, /metrics, /health/live and /health/ready, and the dashboard at /. Bearer tokens come from "
    "--token-file. Binding anything but loopback needs a token file. See docs/server.md.",
    example="filemem serve ./memories --token-file ./tokens.json --port 8765",
    store=None,
    arguments=_arguments,
)
def _serve(args: argparse.Namespace, out: Output) -> int:
    if args.add_token:
        if not args.token_file:
            print("filemem: error: --add-token needs --token-file", file=sys.stderr)
            return EXIT_USAGE
        token = add_token(args.token_file, args.add_token, args.scope or ["read"], args.prefix)
        out.line(token)
        return EXIT_OK
    if not args.token_file and not _is_loopback(args.host):
        print(
            f"filemem: error: refusing to serve on {args.host} without authentication; "
            "pass --token-file FILE (created with an admin token if missing) or bind 127.0.0.1",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not 0 <= args.port <= 65535:
        print(f"filemem: error: --port must be 0-65535, not {args.port}", file=sys.stderr)
        return EXIT_USAGE
    missing = [m for m in ("starlette", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"filemem: error: {INSTALL_HINT} (missing: {', '.join(missing)})", file=sys.stderr)
        return EXIT_USAGE
    tokens = None
    if args.token_file:
        created = ensure_token_file(args.token_file)
        if created is not None:
            out.line(f"created {args.token_file} with an admin token (shown once, keep it): {created}")
        tokens = load_tokens(args.token_file)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host.strip("[]"), args.port))
        # Listen now: connections made after the banner wait in the backlog until uvicorn accepts.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        print(f"filemem: error: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from ._run import run  # noqa: PLC0415 - needs the server extra, checked above

    return run(args, tokens, sock, out)
