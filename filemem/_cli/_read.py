"""Commands that only read: info, ls, get, export, stats, watch. They open the store read-only and never write."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

from .. import Store, UnsupportedFeatureError
from ..admin import export_records, info, namespace_info, stats, to_json_value, watch
from ._base import (
    EXIT_OK,
    EXIT_PROBLEMS,
    Output,
    Progress,
    command,
    human_bytes,
    ns_text,
    open_for,
    positive_int,
    when,
)
from ._maintain import show_findings

__all__: list[str] = []


@command(
    "info",
    help="format, codec, namespaces, records, shards and size of a store",
    description="Summarise a store: format version, codec (and the codec of each shard, which differs while a "
    "conversion is under way), namespaces, live and expired records, shards, size on disk. Read-only.",
    example="filemem info ./memories --json",
    store="read",
)
def _info(args: argparse.Namespace, out: Output) -> int:
    with open_for(args) as store:
        got = info(store)
    if out.json:
        out.emit(got.as_dict())
        return EXIT_OK
    if got.backend != "file":
        out.pairs(
            [
                ("store", got.path),
                ("backend", got.backend),
                ("format", f"schema version {got.format_version}"),
                ("codec", got.codec),
                ("oldest record", when(got.created_at)),
                ("namespaces", got.namespaces),
                ("records", got.records),
                ("expired", f"{got.expired} (never served; swept by filemem compact)"),
                ("size", f"{human_bytes(got.bytes)} in the server's tables"),
            ]
        )
        return EXIT_OK
    codecs = ", ".join(f"{k} {v}" for k, v in got.shard_codecs.items()) or "-"
    out.pairs(
        [
            ("store", got.path),
            ("format", f"version {got.format_version}"),
            ("codec", got.codec),
            ("shard codecs", codecs),
            ("created", when(got.created_at)),
            ("namespaces", got.namespaces),
            ("records", got.records),
            ("expired", f"{got.expired} (dropped by filemem compact)"),
            ("shards", got.shards if not got.damaged_shards else f"{got.shards} ({got.damaged_shards} damaged)"),
            ("size", f"{human_bytes(got.bytes)} in {got.files} files"),
            ("pending batches", got.pending_batches),
            ("quarantined", got.quarantined),
        ]
    )
    return EXIT_OK


def _ls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("namespace", nargs="?", help="list this namespace's keys (default: list namespaces)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="show at most N rows")


def _short(value: object, width: int = 60) -> str:
    text = json.dumps(to_json_value(value), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 3] + "..."


@command(
    "ls",
    help="list namespaces, or the keys of one namespace",
    description="Without NAMESPACE: every namespace that holds records, with records, shards and bytes. With "
    "NAMESPACE (segments joined by '/'): its keys with version, last update, expiry and a preview of the value; "
    "a namespace that only has namespaces under it lists those. Lock-free and read-only.",
    example="filemem ls ./memories agent-1/episodic --limit 20",
    store="read",
    arguments=_ls_args,
)
def _ls(args: argparse.Namespace, out: Output) -> int:
    with open_for(args) as store:
        if args.namespace is None:
            rows = [namespace_info(store, ns) for ns in store.list_namespaces()][: args.limit]
            if out.json:
                for n in rows:
                    out.emit(
                        {"namespace": list(n.namespace), "records": n.records, "shards": n.shards, "bytes": n.bytes}
                    )
            else:
                out.table(
                    ["NAMESPACE", "RECORDS", "SHARDS", "BYTES"],
                    [[ns_text(n.namespace), n.records, n.shards, n.bytes] for n in rows],
                )
            return EXIT_OK
        namespace = args.namespace
        items = store.items(namespace)
        if not items:
            below = store.list_namespaces(prefix=namespace)
            if not below:
                print(
                    f"filemem: no namespace {namespace!r} in {store.path} (filemem ls {args.path} lists them)",
                    file=sys.stderr,
                )
                return EXIT_PROBLEMS
            for ns in below[: args.limit]:
                if out.json:
                    out.emit({"namespace": list(ns)})
                else:
                    out.line(ns_text(ns) + "/")
            return EXIT_OK
        items = items[: args.limit]
        if out.json:
            for it in items:
                out.emit(
                    {
                        "namespace": list(it.namespace),
                        "key": it.key,
                        "value": it.value,
                        "version": it.version,
                        "created_at": it.created_at,
                        "updated_at": it.updated_at,
                        "expires_at": it.expires_at,
                    }
                )
        else:
            out.table(
                ["KEY", "VERSION", "UPDATED", "EXPIRES", "VALUE"],
                [[it.key, it.version, when(it.updated_at), when(it.expires_at), _short(it.value)] for it in items],
            )
    return EXIT_OK


def _get_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("namespace", help="namespace, segments joined by '/'")
    p.add_argument("key", help="the key")


@command(
    "get",
    help="print the value of one key (as JSON)",
    description='Print the value stored at KEY in NAMESPACE as indented JSON (bytes as {"$bytes": base64}). '
    "With --json, one line with the value and its version and times. Exit 1 if the key is absent. Lock-free.",
    example="filemem get ./memories agent-1/facts sky",
    store="read",
    arguments=_get_args,
)
def _get(args: argparse.Namespace, out: Output) -> int:
    with open_for(args) as store:
        item = store.get_item(args.namespace, args.key)
        if item is None:
            where = "" if store.list_namespaces(prefix=args.namespace) else " (no such namespace)"
            print(f"filemem: no key {args.key!r} in namespace {args.namespace!r}{where}", file=sys.stderr)
            return EXIT_PROBLEMS
    if out.json:
        out.emit(
            {
                "namespace": list(item.namespace),
                "key": item.key,
                "value": item.value,
                "version": item.version,
                "created_at": item.created_at,
                "updated_at": item.updated_at,
                "expires_at": item.expires_at,
            }
        )
    else:
        out.line(json.dumps(to_json_value(item.value), ensure_ascii=False, indent=2))
    return EXIT_OK


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default=None, metavar="NAMESPACE", help="only namespaces under this one")
    p.add_argument("-o", "--output", default="-", metavar="FILE", help="write here instead of stdout")


@command(
    "export",
    help="write every record as JSON Lines (stdout or a file)",
    description="Write a header line, then one JSON object per live record: namespace, key, value, version, "
    "created_at, updated_at, expires_at. Bytes and non-string map keys are tagged so that import restores them "
    "exactly. Lock-free, namespace by namespace: safe on a live store, never blocks a writer (records written "
    "meanwhile may or may not be included).",
    example="filemem export ./memories -o memories.jsonl",
    store="read",
    arguments=_export_args,
)
def _export(args: argparse.Namespace, out: Output) -> int:
    with open_for(args) as store, Progress("export") as progress:
        if args.output == "-":
            count = export_records(store, sys.stdout, args.prefix, progress=progress)
            sys.stdout.flush()
            return EXIT_OK
        count = _export_to_file(store, args.output, args.prefix, progress)
    if out.json:
        out.emit({"exported": count, "output": args.output})
    else:
        out.line(f"exported {count} records to {args.output}")
    return EXIT_OK


def _export_to_file(store: Store, output: str, prefix: str | None, progress: Progress) -> int:
    """Export into a private temp file beside ``output``, then rename it into place.

    The dump holds every record of the store, so it gets the store's own
    file mode (0600, from mkstemp), whatever the umask; and a failed export
    leaves no partial file under the name the user asked for.
    """
    directory = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(output) + ".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            count = export_records(store, fh, prefix, progress=progress)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return count


@command(
    "stats",
    help="sizes, shard distribution, lock and cache figures",
    description="Per namespace: records, shards, bytes and shard sizes (min/median/max); store-wide: a histogram "
    "of shard sizes and of shard depths (how often namespaces split), lock files and how many are held right "
    "now (a non-blocking probe), and this process's cache figures for reading the store once (caches are per "
    "process). Then the health findings (store.health()), each with its recommended action; --json puts them "
    'under "health". Read-only.',
    example="filemem stats ./memories --json",
    store="read",
)
def _stats(args: argparse.Namespace, out: Output) -> int:
    unavailable = None
    with open_for(args) as store:
        got = stats(store)
        try:
            findings = store.health()
        except UnsupportedFeatureError as exc:  # a backend without health() yet: the figures still stand
            findings, unavailable = [], exc.message
    if out.json:
        out.emit({**got, "health": None if unavailable else [f.as_dict() for f in findings]})
        return EXIT_OK
    if got.get("backend", "file") != "file":
        _server_stats(out, got)
        out.line()
        if unavailable:
            out.line(f"health: {unavailable}")
        else:
            show_findings(out, findings)
        return EXIT_OK
    out.table(
        ["NAMESPACE", "RECORDS", "EXPIRED", "SHARDS", "BYTES", "MIN", "MEDIAN", "MAX"],
        [
            [
                ns_text(n["namespace"]),
                n["records"],
                n["expired"],
                n["shards"],
                n["bytes"],
                n["shard_bytes_min"],
                n["shard_bytes_median"],
                n["shard_bytes_max"],
            ]
            for n in got["namespaces"]
        ],
    )
    out.line()
    cache = got["process"]["cache"]
    out.pairs(
        [
            ("records", got["records"]),
            ("shards", f"{got['shards']} ({human_bytes(got['shard_bytes_total'])})"),
            ("shard sizes", ", ".join(f"{k} {v}" for k, v in got["shard_sizes"].items())),
            ("shard depths", ", ".join(f"{k}: {v}" for k, v in got["shard_depths"].items()) or "-"),
            ("locks", f"{got['locks']['lock_files']} lock files, {got['locks']['held_now']} held now"),
            (
                "this process",
                f"{got['process']['shard_parses']} shard parses, cache {cache.get('entries', 0)} "
                f"entries / {human_bytes(int(cache.get('bytes', 0)))}",
            ),
        ]
    )
    out.line()
    show_findings(out, findings)
    return EXIT_OK


def _server_stats(out: Output, got: dict[str, object]) -> None:
    """``filemem stats`` of a server store: no shards or lock files, the tables instead."""
    rows: list[dict[str, object]] = got["namespaces"]  # type: ignore[assignment]
    out.table(
        ["NAMESPACE", "RECORDS", "EXPIRED", "BYTES"],
        [[ns_text(n["namespace"]), n["records"], n["expired"], n["bytes"]] for n in rows],  # type: ignore[arg-type]
    )
    out.line()
    tables: dict[str, int] = got["tables"]  # type: ignore[assignment]
    process: dict[str, object] = got["process"]  # type: ignore[assignment]
    out.pairs(
        [
            ("backend", f"{got['backend']} (schema version {got['schema_version']})"),
            ("records", f"{got['records']} ({human_bytes(int(got['value_bytes']))} of values)"),  # type: ignore[call-overload]
            ("expired", f"{got['expired']} not yet swept (never served)"),
            ("tables", ", ".join(f"{k} {human_bytes(v)}" for k, v in tables.items()) or "-"),
            ("outbox rows", got["outbox_rows"]),
            ("this process", f"{process.get('reads', 0)} reads"),
        ]
    )


def _watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", nargs="?", default=None, help="only namespaces under this one")
    p.add_argument("--values", action="store_true", help="also print the current value of each touched key")
    p.add_argument("--count", type=positive_int, default=None, metavar="N", help="stop after N changes")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop after this long")


@command(
    "watch",
    help="live tail of changes made by any process",
    description="Print one line per change any process makes to the store (the same file-system events that "
    "keep caches fresh): time, kind (write, delete of a shard file, or 'missed' when events were lost), "
    "namespace and touched keys. --json prints JSON Lines. Runs until Ctrl-C, --count or --timeout. Read-only.",
    example="filemem watch ./memories agent-1 --values",
    store="read",
    arguments=_watch_args,
)
def _watch(args: argparse.Namespace, out: Output) -> int:
    with open_for(args, watch=True) as store:
        if not out.json:
            print(f"watching {store.path} (Ctrl-C to stop)", file=sys.stderr)
        for change in watch(store, args.prefix, timeout_s=args.timeout, max_changes=args.count):
            keys = list(change.keys) if change.keys is not None else None
            values: dict[str, object] = {}
            if args.values and keys and change.kind == "write":
                for k in keys:
                    with contextlib.suppress(Exception):  # the key may be gone again, or the shard mid-split
                        values[k] = store.get(change.namespace, k)
            if out.json:
                row: dict[str, object] = {
                    "time": change.time,
                    "kind": change.kind,
                    "namespace": list(change.namespace),
                    "keys": keys,
                    "shard": change.shard,
                }
                if args.values:
                    row["values"] = values
                out.emit(row)
                continue
            stamp = time.strftime("%H:%M:%S", time.localtime(change.time)) + f".{int(change.time * 1000) % 1000:03d}"
            shown = "?" if keys is None else ",".join(keys) or "-"
            text = f"{stamp}  {change.kind:<6}  {ns_text(change.namespace) or '-'}  {shown}"
            if values:
                text += "  " + " ".join(f"{k}={_short(v, 40)}" for k, v in values.items())
            out.line(text)
            out.stream.flush()
    return EXIT_OK
