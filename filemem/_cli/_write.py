"""Commands that write: put, rm, import, check, compact, convert. They take the same locks as the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Iterator

from .. import ConflictError, Finding, InvalidValueError
from ..admin import check, compact, convert, from_json_value, import_records, upgrade
from ._base import EXIT_OK, EXIT_PROBLEMS, Output, Progress, command, open_for, positive_int

__all__: list[str] = []


def _parse_value(text: str) -> object:
    try:
        return from_json_value(json.loads(text))
    except ValueError as exc:
        msg = exc.message if isinstance(exc, InvalidValueError) else str(exc)
        raise InvalidValueError(f"VALUE is not valid JSON ({msg}); quote strings, e.g. '\"blue\"'") from None


def _put_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("namespace", help="namespace, segments joined by '/'")
    p.add_argument("key", help="the key")
    p.add_argument("value", help="the value as JSON (a string needs its quotes: '\"blue\"')")
    p.add_argument("--ttl", type=float, default=None, metavar="SECONDS", help="expire the record after this long")
    p.add_argument(
        "--if-version", type=int, default=None, metavar="N", help="write only if the record is at version N (0: absent)"
    )


@command(
    "put",
    help="store a JSON value at a key",
    description="Store VALUE (parsed as JSON) at KEY in NAMESPACE and print the record's new version. Takes the "
    "shard's exclusive lock like any writer. --if-version makes it a compare-and-set (exit 1 on a conflict).",
    example="filemem put ./memories agent-1/facts sky '\"blue\"' --ttl 3600",
    store="write",
    arguments=_put_args,
)
def _put(args: argparse.Namespace, out: Output) -> int:
    value = _parse_value(args.value)  # before the store is even opened: bad input changes nothing
    with open_for(args, write=True) as store:
        try:
            version = store.put(args.namespace, args.key, value, ttl=args.ttl, if_version=args.if_version)
        except ConflictError as exc:
            print(f"filemem: conflict: {exc.message}", file=sys.stderr)
            return EXIT_PROBLEMS
    if out.json:
        out.emit({"namespace": args.namespace, "key": args.key, "version": version})
    else:
        out.line(f"{args.namespace}/{args.key}: version {version}")
    return EXIT_OK


def _rm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("namespace", help="namespace, segments joined by '/'")
    p.add_argument("key", help="the key")
    p.add_argument(
        "--if-version", type=int, default=None, metavar="N", help="delete only if the record is at version N"
    )


@command(
    "rm",
    help="delete a key",
    description="Delete KEY from NAMESPACE under the shard's exclusive lock. Exit 1 if it was not there (or, "
    "with --if-version, on a conflict).",
    example="filemem rm ./memories agent-1/facts sky",
    store="write",
    arguments=_rm_args,
)
def _rm(args: argparse.Namespace, out: Output) -> int:
    with open_for(args, write=True) as store:
        # A key that is not there needs no lock (and so no lock file): report it and change nothing.
        present = args.if_version is not None or store.get_item(args.namespace, args.key) is not None
        try:
            removed = present and store.delete(args.namespace, args.key, if_version=args.if_version)
        except ConflictError as exc:
            print(f"filemem: conflict: {exc.message}", file=sys.stderr)
            return EXIT_PROBLEMS
    if out.json:
        out.emit({"namespace": args.namespace, "key": args.key, "deleted": removed})
    elif removed:
        out.line(f"{args.namespace}/{args.key}: deleted")
    if not removed:
        print(f"filemem: no key {args.key!r} in namespace {args.namespace!r}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="?", default="-", help="JSON Lines file (default: stdin)")
    p.add_argument("--dry-run", action="store_true", help="validate every line and report; write nothing")
    p.add_argument(
        "--batch-size", type=positive_int, default=200, metavar="N", help="records per atomic batch (default 200)"
    )
    p.add_argument("--create", action="store_true", help="create the store if it does not exist")
    p.add_argument("--codec", choices=["json", "msgpack"], default=None, help="codec of a store --create makes")


def _lines(path: str) -> Iterator[str]:
    if path == "-":
        yield from sys.stdin
        return
    with open(path, encoding="utf-8") as fh:
        yield from fh


@command(
    "import",
    help="read records from JSON Lines (atomic per batch; --dry-run)",
    description="Read records as `filemem export` writes them (or any lines with namespace, key, value and an "
    "optional expires_at). Every line is validated first: one bad line is reported with its number and nothing "
    "is written. Then records are written --batch-size at a time, each batch all or nothing; existing keys are "
    "overwritten. Kept: namespace, key, value, expiry. New: version, created_at, updated_at.",
    example="filemem import ./copy memories.jsonl --create --codec msgpack --dry-run",
    store="write",
    arguments=_import_args,
)
def _import(args: argparse.Namespace, out: Output) -> int:
    if args.input != "-" and not os.path.isfile(args.input):
        raise InvalidValueError(f"no such input file: {args.input}")
    lines = list(_lines(args.input))  # read whole: a bad line is then found before anything is written
    exists = os.path.isdir(args.path)
    if args.dry_run and not exists and args.create:
        # Validate against a store of the codec we would create, without creating anything.
        raise InvalidValueError("--dry-run needs an existing store (drop --create, or create it first)")
    with (
        open_for(args, write=not args.dry_run, create=args.create and not args.dry_run) as store,
        Progress("import") as progress,
    ):
        report = import_records(store, lines, batch_size=args.batch_size, dry_run=args.dry_run, progress=progress)
    if out.json:
        out.emit(dataclasses.asdict(report))
    else:
        verb = "would import" if report.dry_run else "imported"
        out.line(
            f"{verb} {report.imported} records into {report.namespaces} namespaces in {report.batches} batches"
            + (f"; skipped {report.expired_skipped} already expired" if report.expired_skipped else "")
        )
    return EXIT_OK


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fix", action="store_true", help="repair what can be repaired")


@command(
    "check",
    help="verify every file of a store (and repair with --fix)",
    description="Verify checksums, find leftover temp files, unfinished batches and splits. Safe on a live store; "
    "without --fix the store is opened read-only and nothing is written. Exit 0 when clean (or everything was "
    "fixed), 1 otherwise. --json prints the findings as one JSON list.",
    example="filemem check ./memories --fix --json",
    store="write",
    arguments=_check_args,
)
def _check(args: argparse.Namespace, out: Output) -> int:
    with open_for(args, write=args.fix) as store, Progress("check") as progress:
        # Opening a store read-write already rolls forward batches whose writer
        # died: say so, or `check --fix` would call such a store plainly clean.
        recovered = int(store.stats().get("batches_recovered", 0))  # a server backend recovers no batches
        findings = check(store, fix=args.fix, progress=progress)
    if recovered:
        findings.insert(
            0,
            Finding(
                "unfinished-batch",
                os.path.join(os.path.abspath(args.path), "batches"),
                f"{recovered} committed batch(es) whose writer died",
                fixed=True,
                action="rolled forward when the store was opened",
            ),
        )
    if out.json:
        out.line(json.dumps([dataclasses.asdict(f) for f in findings]))
    elif not findings:
        out.line(f"{args.path}: clean")
    else:
        for f in findings:
            status = f"FIXED ({f.action})" if f.fixed else ("" if not args.fix else "NOT FIXED")
            out.line(f"{f.severity:7} {f.code:18} {f.path}: {f.message} {status}".rstrip())
    unfixed = [f for f in findings if not f.fixed and f.severity == "error"]
    return EXIT_PROBLEMS if unfixed or (findings and not args.fix) else EXIT_OK


def _compact_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-merge", action="store_true", help="do not merge tiny sibling shards")


@command(
    "compact",
    help="drop expired records, finish splits, merge tiny shards",
    description="Under each shard's lock: drop records whose TTL has passed, finish splits a crashed writer left, "
    "split oversize shards, then merge pairs of sibling shards that together hold at most 1/16 of "
    "--shard-max-bytes back into one (busy shards are skipped). Deleted records need no compaction: a delete "
    "removes the record at once. Safe on a live store.",
    example="filemem compact ./memories --shard-max-bytes 32768",
    store="write",
    arguments=_compact_args,
)
def _compact(args: argparse.Namespace, out: Output) -> int:
    with open_for(args, write=True) as store, Progress("compact") as progress:
        got = compact(store, merge=not args.no_merge, progress=progress)
    if out.json:
        out.emit(got)
    else:
        out.pairs([(k.replace("_", " "), v) for k, v in got.items()])
    return EXIT_OK


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--codec", choices=["json", "msgpack"], help="the codec to convert to")
    p.add_argument(
        "--upgrade",
        action="store_true",
        help="upgrade the store to the newest format (2: a write-ahead log in front of the shards); "
        "stop processes running an older filemem first",
    )


@command(
    "convert",
    help="rewrite a store with another codec, in place and live",
    description="Check that every record can be encoded with the new codec (else exit 2, nothing changed), rewrite "
    "every shard under its lock, switch the store's codec, then convert shards written meanwhile. Readers and "
    "writers keep working throughout: each shard names its own codec. Running agents adopt the new codec at their next "
    "write after the switch. filemem info shows the codec of every shard; convert is idempotent. With --upgrade, "
    "first upgrade the store in place to the newest format (a version-1 store gains the write-ahead log).",
    example="filemem convert ./memories --codec msgpack",
    store="write",
    arguments=_convert_args,
)
def _convert(args: argparse.Namespace, out: Output) -> int:
    if args.codec is None and not args.upgrade:
        raise InvalidValueError("give --codec, --upgrade or both")
    if args.codec is None:
        with open_for(args, write=True) as store:
            done = upgrade(store)
        if out.json:
            out.emit({"upgraded": done, "format": 2})
        else:
            out.line("upgraded the store to format 2" if done else "the store already has format 2")
        return EXIT_OK
    with open_for(args, write=True) as store, Progress("convert") as progress:
        if args.upgrade:
            upgrade(store)
        got = convert(store, args.codec, progress=progress)
    if out.json:
        out.emit(got)
    else:
        out.line(
            f"converted {got['converted']} shards from {got['from']} to {got['to']} "
            f"({got['already']} already {got['to']}); the store's codec is now {got['to']}"
        )
    return EXIT_OK
