"""``filemem copy SRC DST``: move a whole store between a directory and a PostgreSQL server, either way (issue 16)."""

from __future__ import annotations

import argparse
import sys

from .._errors import InvalidValueError
from ..admin import copy_store, open_store
from ._base import EXIT_OK, EXIT_PROBLEMS, Output, Progress, command, positive_float, positive_int

__all__: list[str] = []


def _copy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="the store to copy: a directory or a postgresql:// URL (opened read-only)")
    p.add_argument("destination", help="where to copy it: a directory or a postgresql:// URL (created if missing)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    p.add_argument("--prefix", default=None, metavar="NAMESPACE", help="only namespaces under this one")
    p.add_argument(
        "--batch-size", type=positive_int, default=200, metavar="N", help="records per atomic batch (default 200)"
    )
    p.add_argument("--codec", choices=["json", "msgpack"], default=None, help="codec of a destination this creates")
    p.add_argument(
        "--merge",
        action="store_true",
        help="allow a destination that already holds records (existing keys are overwritten)",
    )
    p.add_argument(
        "--lock-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="give up (exit 4) when a lock is not had within this long (default 10)",
    )


@command(
    "copy",
    help="copy every record of a store into another (directory <-> postgresql://)",
    description="Read every live record of SOURCE (namespace by namespace, never blocking its writers) and write "
    "it into DESTINATION, either of them a store directory or a postgresql:// URL: how a store moves to a server "
    "and back. Every record is first checked against the destination (codec, size limit): one it cannot hold "
    "exits 2 and nothing is written. Then batches commit all or nothing. Kept: namespace, key, value (exactly), "
    "expiry; versions and times are the destination's. A destination that already holds records is refused "
    "unless --merge. Progress on a terminal; --json prints the report.",
    example="filemem copy ./memories postgresql://agent@db/memories --json",
    store=None,
    arguments=_copy_args,
)
def _copy(args: argparse.Namespace, out: Output) -> int:
    if args.source == args.destination:
        raise InvalidValueError("SOURCE and DESTINATION are the same store")
    with (
        open_store(args.source, lock_timeout_s=args.lock_timeout) as src,
        open_store(
            args.destination, readonly=False, create=True, codec=args.codec, lock_timeout_s=args.lock_timeout
        ) as dst,
    ):
        if not args.merge and dst.list_namespaces(prefix=args.prefix):
            print(
                f"filemem: {dst.path} already holds records"
                + (f" under {args.prefix!r}" if args.prefix else "")
                + " (--merge to copy into it anyway)",
                file=sys.stderr,
            )
            return EXIT_PROBLEMS
        with Progress("copy") as progress:
            report = copy_store(src, dst, prefix=args.prefix, batch_size=args.batch_size, progress=progress)
    if out.json:
        out.emit(report.as_dict())
    else:
        out.line(
            f"copied {report.copied} records in {report.namespaces} namespaces from {report.source} to "
            f"{report.destination} in {report.batches} batches"
            + (f"; skipped {report.expired_skipped} expired meanwhile" if report.expired_skipped else "")
        )
    return EXIT_OK
