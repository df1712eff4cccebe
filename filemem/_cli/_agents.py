"""Commands about what agents do in a store: sessions, stop, search, dead letters."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from .._errors import InvalidQueryError
from ..admin import to_json_value
from ._base import EXIT_OK, EXIT_PROBLEMS, Output, command, ns_text, open_for, positive_int, when

__all__: list[str] = []


def _sessions_args(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="live and ended sessions")
    which.add_argument("--ended", action="store_true", help="only ended (and crashed) sessions")


@command(
    "sessions",
    help="list the sessions of every process (live by default)",
    description="List registered sessions: id, agent, pid, state, status, progress, priority, namespace, "
    "operations and start time. A session is alive exactly while its process holds its lock, so a crashed "
    "agent shows as crashed at once. Read-only: a crash is reported here but recorded by the next writer.",
    example="filemem sessions ./memories --all --json",
    store="read",
    arguments=_sessions_args,
)
def _sessions(args: argparse.Namespace, out: Output) -> int:
    alive: bool | None = None if args.all else not args.ended
    with open_for(args) as store:
        rows = store.sessions(alive=alive)
    if out.json:
        for info in rows:
            d: dict[str, Any] = dataclasses.asdict(info)
            d["namespace"] = list(info.namespace) if info.namespace is not None else None
            d["shared"] = [list(ns) for ns in info.shared]
            out.emit(d)
        return EXIT_OK
    out.table(
        ["ID", "AGENT", "PID", "STATE", "STATUS", "PROGRESS", "PRIO", "NAMESPACE", "OPS", "STARTED"],
        [
            [
                i.id,
                i.agent,
                i.pid,
                i.state,
                i.status,
                "-" if i.progress is None else f"{i.progress:.0%}",
                i.priority,
                "-" if i.namespace is None else ns_text(i.namespace),
                i.operations,
                when(i.started_at),
            ]
            for i in rows
        ],
    )
    return EXIT_OK


def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("session_id", help="the session's id (see filemem sessions)")


@command(
    "stop",
    help="ask a live session (of any process) to stop",
    description="Request a graceful stop: the session sees stop_requested become true and its on_stop callback "
    "runs. Stopping is up to the agent. Exit 1 if the session is not alive.",
    example="filemem stop ./memories 0187a3f2c4d5e6f7a1b2c3d4",
    store="write",
    arguments=_stop_args,
)
def _stop(args: argparse.Namespace, out: Output) -> int:
    with open_for(args, write=True) as store:
        sent = store.request_stop(args.session_id)
    if out.json:
        out.emit({"session": args.session_id, "stop_requested": sent})
    elif sent:
        out.line(f"stop requested for session {args.session_id}")
    else:
        print(f"filemem: no live session {args.session_id!r}", file=sys.stderr)
    return EXIT_OK if sent else EXIT_PROBLEMS


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", help="namespace prefix, whole segments ('' or / for the whole store)")
    p.add_argument("query", nargs="?", default=None, help="keywords, ranked by BM25 over the text fields")
    p.add_argument(
        "--filter",
        default=None,
        metavar="JSON",
        help='a filter on value fields, e.g. \'{"ok": false, "meta.score": {"$gte": 0.5}}\'',
    )
    p.add_argument("--limit", type=positive_int, default=10, metavar="N", help="at most N hits (default 10)")
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N hits")


@command(
    "search",
    help="search records by keywords and/or a filter on value fields",
    description="Rank records under a namespace prefix by BM25 over their text fields (QUERY) and/or keep those "
    "whose value fields match --filter ($eq $ne $gt $gte $lt $lte $in; dotted paths reach nested fields). "
    "Read-only: the index files are used when current, never written.",
    example='filemem search ./memories agent-1 "login timeout" --filter \'{"ok": false}\' --limit 5',
    store="read",
    arguments=_search_args,
)
def _search(args: argparse.Namespace, out: Output) -> int:
    flt = None
    if args.filter is not None:
        try:
            flt = json.loads(args.filter)
        except json.JSONDecodeError as exc:
            raise InvalidQueryError(f"--filter is not JSON: {exc.msg} at column {exc.colno}") from None
    prefix = None if args.prefix in ("", "/") else args.prefix
    with open_for(args) as store:
        hits = store.search(prefix, args.query, flt, args.limit, args.offset)
    if out.json:
        for h in hits:
            out.emit(
                {
                    "namespace": list(h.item.namespace),
                    "key": h.item.key,
                    "score": h.score,
                    "version": h.item.version,
                    "value": to_json_value(h.item.value),
                }
            )
        return EXIT_OK
    out.table(
        ["SCORE", "NAMESPACE", "KEY", "VALUE"],
        [
            [
                f"{h.score:.3f}",
                ns_text(h.item.namespace),
                h.item.key,
                json.dumps(to_json_value(h.item.value), ensure_ascii=False)[:60],
            ]
            for h in hits
        ],
    )
    return EXIT_OK


def _deadletters_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--replay",
        action="store_true",
        help="put the letters back into the store (a key written since is left alone: 'superseded')",
    )


@command(
    "deadletters",
    help="show (or replay) records a collector could not apply",
    description="List the collectors' dead letters (journals/deadletter-*.jsonl): records that kept failing, "
    "were dropped by on_full=drop_oldest, or were left when a collector closed without a journal. With "
    "--replay, put them into the store under the usual locks; exit 1 if any still fail.",
    example="filemem deadletters ./memories --json",
    store="write",
    arguments=_deadletters_args,
)
def _deadletters(args: argparse.Namespace, out: Output) -> int:
    if args.replay:
        with open_for(args, write=True) as store:
            counts = store.replay_dead_letters()
        if out.json:
            out.emit(counts)
        else:
            out.pairs(sorted(counts.items()))
        return EXIT_PROBLEMS if counts.get("failed") else EXIT_OK
    with open_for(args) as store:
        letters = store.dead_letters()
    if out.json:
        for d in letters:
            row = dataclasses.asdict(d)
            row["namespace"] = list(d.namespace)
            row["value"] = to_json_value(d.value)
            out.emit(row)
        return EXIT_OK
    out.table(
        ["ID", "NAMESPACE", "KEY", "REASON", "FAILED", "ERROR"],
        [[d.id, ns_text(d.namespace), d.key, d.reason, when(d.failed_at), d.error[:50]] for d in letters],
    )
    return EXIT_OK
