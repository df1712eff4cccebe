"""Commands that run something: demo (agent processes sharing a store) and bench (a short benchmark)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .._demo import DEFAULT_DIR, run_demo
from .._errors import InvalidValueError
from ..admin import bench
from ._base import EXIT_OK, EXIT_PROBLEMS, Output, command, positive_int

__all__: list[str] = []


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path",
        nargs="?",
        default=None,
        help=f"store directory or postgresql:// URL (default: $FILEMEM_DEMO_DIR or ./{DEFAULT_DIR})",
    )
    p.add_argument(
        "--store",
        default=None,
        metavar="LOCATION",
        help="the same as PATH: a store directory or a postgresql:// URL (the agents then share the server)",
    )
    p.add_argument("--workers", type=int, default=4, help="agent processes to start (default 4)")
    p.add_argument("--rounds", type=int, default=100, help="episodes each agent records (default 100)")
    p.add_argument("--durability", choices=["fsync", "flush"], default="fsync", help="durability level")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


@command(
    "demo",
    help="run several agent processes sharing a store, then report",
    description="Start several agent processes that write and update shared memories, then print "
    "what they wrote and a summary (records, shards, lost updates: there must be none). With --store "
    "postgresql://... the agents share a PostgreSQL server store instead of a directory.",
    example=f"filemem demo --workers 8 --rounds 200   (default store: ./{DEFAULT_DIR}); "
    "filemem demo --store postgresql://agent@db/memories",
    store=None,
    arguments=_demo_args,
)
def _demo(args: argparse.Namespace, out: Output) -> int:
    if args.path is not None and args.store is not None and args.path != args.store:
        raise InvalidValueError("give the store once: PATH or --store, not both")
    report = run_demo(
        args.store or args.path,
        workers=args.workers,
        rounds=args.rounds,
        durability=args.durability,
        echo=(lambda s: None) if args.json else print,
    )
    if args.json:
        print(json.dumps({**dataclasses.asdict(report), "lost_updates": report.lost_updates, "ok": report.ok}))
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=positive_int, default=500, help="puts, then as many gets (default 500)")
    p.add_argument("--value-bytes", type=int, default=100, help="size of each value's payload (default 100)")
    p.add_argument("--durability", choices=["fsync", "flush"], default="fsync", help="for both sides (default fsync)")
    p.add_argument(
        "--dir", default=None, help="where the temporary stores go (default: system temp; tmpfs makes fsync free)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


@command(
    "bench",
    help="a short benchmark: this store beside a JSON file plus a lock",
    description="Time RECORDS puts and RECORDS random gets on a new filemem store and on the baseline a script "
    "would write without filemem (one JSON file, an exclusive lock, rewritten whole through a temp file and a "
    "rename), in this process, and print operations per second and ratios (>1: filemem is faster). Both "
    "temporary stores are removed. tools/bench.py compares with SQLite and LMDB peers across processes.",
    example="filemem bench --records 1000 --durability flush",
    store=None,
    arguments=_bench_args,
)
def _bench(args: argparse.Namespace, out: Output) -> int:
    report = bench(args.dir, records=args.records, value_bytes=args.value_bytes, durability=args.durability)
    if out.json:
        out.emit(report.as_dict())
        return EXIT_OK
    out.table(
        ["OPERATION", "FILEMEM/S", "BASELINE/S", "RATIO"],
        [
            ["put", report.filemem_put_per_s, report.baseline_put_per_s, f"{report.put_ratio}x"],
            ["get (cached)", report.filemem_get_per_s, report.baseline_get_per_s, f"{report.get_ratio}x"],
            ["get (strict)", report.filemem_get_strict_per_s, report.baseline_get_per_s, f"{report.get_strict_ratio}x"],
        ],
    )
    out.line(f"{report.records} records of ~{report.value_bytes} bytes, durability {report.durability}")
    return EXIT_OK
