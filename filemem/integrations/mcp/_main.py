"""``filemem mcp PATH`` and ``python -m filemem.integrations.mcp PATH``: arguments, import, serve.

Invariant: importing this module needs only the standard library and
filemem (``filemem mcp`` is registered from it even where the ``mcp`` extra
is missing); the SDK is imported when a server is started, and its absence
is reported as a usage error (exit 2) naming the extra to install.
``--import`` needs no SDK at all. Nothing but the protocol is ever written
to stdout while serving over stdio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Final, TextIO

from filemem import FileMemError, InvalidKeyError, InvalidValueError, LockTimeout, Store
from filemem._cli._base import positive_float
from filemem.admin import open_store

from ._graph import DEFAULT_NAMESPACE, KnowledgeGraph, read_jsonl

__all__ = ["DEFAULT_PORT", "INSTALL_HINT", "add_arguments", "main", "run"]

#: The port ``--http`` listens on unless ``--port`` says otherwise.
DEFAULT_PORT: Final = 8765
#: What to tell a user whose environment lacks the SDK.
INSTALL_HINT: Final = 'the MCP server needs the mcp extra: pip install "filemem[mcp]"'

_EXIT_OK: Final = 0
_EXIT_USAGE: Final = 2  # the same codes as the filemem command line (filemem/_cli/_base.py)
_EXIT_STORE: Final = 3
_EXIT_BUSY: Final = 4
_EXIT_INTERRUPTED: Final = 130


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``filemem mcp`` (shared with ``python -m filemem.integrations.mcp``)."""
    p.add_argument("path", help="store directory (created if missing)")
    p.add_argument(
        "--import",
        dest="import_file",
        metavar="FILE",
        help="import a reference server's memory.jsonl into the graph (existing entities and relations are kept), "
        "print what was created, and exit",
    )
    p.add_argument(
        "--http", action="store_true", help="serve streamable HTTP on 127.0.0.1 (path /mcp) instead of stdio"
    )
    p.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, metavar="N", help=f"port for --http (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--namespace",
        default="/".join(DEFAULT_NAMESPACE),
        metavar="NS",
        help="where the graph lives in the store, segments joined by '/' (default mcp/memory); one store can hold "
        "several graphs",
    )
    p.add_argument(
        "--filemem-tools",
        action="store_true",
        help="also serve filemem's own tools: put, get, search, list_namespaces, recall_context",
    )
    p.add_argument("--json", action="store_true", help="--import prints its counts as JSON")
    p.add_argument(
        "--lock-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="a tool call fails (a tool error, not a crash) when a lock is not had within this long (default 10)",
    )


def _namespace(text: str) -> tuple[str, ...]:
    ns = tuple(text.split("/"))
    if not all(ns):
        raise InvalidKeyError(f"--namespace {text!r} has an empty segment", namespace=text)
    return ns


def _open(args: argparse.Namespace) -> Store:
    return open_store(args.path, readonly=False, create=True, lock_timeout_s=args.lock_timeout)


def _import(args: argparse.Namespace, out: TextIO) -> int:
    try:
        with open(args.import_file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValueError(f"cannot read {args.import_file}: {exc}") from exc
    # Parse the whole file before opening the store: a bad line changes nothing.
    graph = read_jsonl(text, source=os.path.basename(args.import_file))
    with _open(args) as store:
        entities, relations = KnowledgeGraph(store, _namespace(args.namespace)).import_graph(graph)
    counts = {
        "entities": entities,
        "relations": relations,
        "entities_present": len(graph.entities) - entities,
        "relations_present": len(graph.relations) - relations,
    }
    if args.json:
        out.write(json.dumps(counts) + "\n")
    else:
        out.write(
            f"imported {entities} entities and {relations} relations into {args.namespace} "
            f"({counts['entities_present']} entities and {counts['relations_present']} relations were already there "
            "or repeated)\n"
        )
    return _EXIT_OK


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Do what the parsed arguments say: import a file, or serve until the client goes away.

    Raises filemem's errors (the caller maps them to exit codes); returns 2
    with an install hint when the ``mcp`` extra is missing.
    """
    if args.import_file is not None:
        return _import(args, out if out is not None else sys.stdout)
    namespace = _namespace(args.namespace)
    try:
        from ._server import build_server  # noqa: PLC0415 - the optional SDK, imported when serving
    except ImportError as exc:
        print(f"filemem mcp: {INSTALL_HINT} ({exc})", file=sys.stderr)
        return _EXIT_USAGE
    with _open(args) as store:
        server = build_server(store, namespace=namespace, filemem_tools=args.filemem_tools)
        if args.http:
            print(f"filemem mcp: serving {store.path} on http://127.0.0.1:{args.port}/mcp", file=sys.stderr)
            server.run("streamable-http", host="127.0.0.1", port=args.port)
        else:
            server.run()
    return _EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m filemem.integrations.mcp``: the same as ``filemem mcp``."""
    parser = argparse.ArgumentParser(
        prog="python -m filemem.integrations.mcp",
        description="A drop-in for the reference MCP memory server, over a filemem store shared by many processes.",
        epilog="Example: python -m filemem.integrations.mcp ./memories",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    code: int
    try:
        code = run(args)
    except LockTimeout as exc:
        print(f"filemem mcp: store busy: {exc}", file=sys.stderr)
        code = _EXIT_BUSY
    except (InvalidKeyError, InvalidValueError) as exc:
        print(f"filemem mcp: error: {exc}", file=sys.stderr)
        code = _EXIT_USAGE
    except FileMemError as exc:
        print(f"filemem mcp: error: {exc}", file=sys.stderr)
        code = _EXIT_STORE
    except KeyboardInterrupt:
        code = _EXIT_INTERRUPTED
    return code
