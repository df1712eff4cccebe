"""The ``filemem`` command line (layer L6): parsing, rendering, exit codes; nothing else.

Exit codes: 0 ok, 1 problems found, 2 usage error, 3 store error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from . import FileMemError, Store
from ._demo import DEFAULT_DIR, run_demo

__all__ = ["main"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_STORE = 3


def _cmd_demo(args: argparse.Namespace) -> int:
    report = run_demo(
        args.path,
        workers=args.workers,
        rounds=args.rounds,
        durability=args.durability,
        echo=(lambda s: None) if args.json else print,
    )
    if args.json:
        print(json.dumps({**dataclasses.asdict(report), "lost_updates": report.lost_updates, "ok": report.ok}))
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _cmd_check(args: argparse.Namespace) -> int:
    with Store(args.path, create=False) as store:
        findings = store.check(fix=args.fix)
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in findings], indent=None))
    elif not findings:
        print(f"{args.path}: clean")
    else:
        for f in findings:
            status = f"FIXED ({f.action})" if f.fixed else ("" if not args.fix else "NOT FIXED")
            print(f"{f.severity:7} {f.code:18} {f.path}: {f.message} {status}".rstrip())
    unfixed = [f for f in findings if not f.fixed and f.severity == "error"]
    return EXIT_PROBLEMS if unfixed or (findings and not args.fix) else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to generate docs/cli.md)."""
    parser = argparse.ArgumentParser(
        prog="filemem",
        description="Inspect, verify and exercise a filemem store.",
        epilog="Example: filemem check ./memories --fix",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run several agent processes sharing a store, then report",
        description="Start several agent processes that write and update shared memories, then print "
        "what they wrote and a summary (records, shards, lost updates: there must be none).",
        epilog=f"Example: filemem demo --workers 8 --rounds 200   (default store: ./{DEFAULT_DIR})",
    )
    demo.add_argument(
        "path", nargs="?", default=None, help=f"store directory (default: $FILEMEM_DEMO_DIR or ./{DEFAULT_DIR})"
    )
    demo.add_argument("--workers", type=int, default=4, help="agent processes to start (default 4)")
    demo.add_argument("--rounds", type=int, default=100, help="episodes each agent records (default 100)")
    demo.add_argument("--durability", choices=["fsync", "flush"], default="fsync", help="durability level")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser(
        "check",
        help="verify every file of a store (and repair with --fix)",
        description="Verify checksums, find leftover temp files, unfinished batches and splits. "
        "Safe on a live store. Exit 0 when clean (or everything was fixed), 1 otherwise.",
        epilog="Example: filemem check ./memories --fix --json",
    )
    check.add_argument("path", help="store directory")
    check.add_argument("--fix", action="store_true", help="repair what can be repaired")
    check.add_argument("--json", action="store_true", help="print findings as a JSON list")
    check.set_defaults(func=_cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``filemem`` and ``python -m filemem``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except FileMemError as exc:
        print(f"filemem: error: {exc}", file=sys.stderr)
        return EXIT_STORE
    except KeyboardInterrupt:
        return 130
    return code
