"""``POST /v1/collect``: the server's fire-and-forget collector, for clients over HTTP (layer L7).

Invariants: the server runs one collector (``store.collector()``, with its
durable journal) while it serves a read-write store, and closes it (draining
the queue) when it stops; a server killed meanwhile leaves its journal, which
the next process to open the store replays. A request is checked whole
(shape, the token's write scope over every record's namespace, every key,
namespace and value as ``store.put`` would check them) before the first record
is queued: bad input queues nothing. Accepted records answer ``202``: they
are queued, journaled within milliseconds, and applied in batches; a record
the store refuses for good lands in the dead-letter file.

Example (a client)::

    POST /v1/collect
    [{"namespace": "agent-7/events", "key": "ev-1", "value": {"ok": true}},
     {"namespace": "agent-7/events", "key": "ev-2", "value": {"ok": false}, "priority": "high"}]
    -> 202 {"accepted": 2, "ids": [41, 42]}
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import Collector, FileMemError, InvalidKeyError, InvalidValueError, ReadOnlyError, Store
from ._problems import ApiError
from ._shapes import namespace_of

if TYPE_CHECKING:
    from ._app import Server

__all__ = ["CollectorHost", "collect_route"]

#: Most records in one request (a larger body is refused whole).
COLLECT_MAX_RECORDS: Final = 10_000
_PRIORITIES: Final = ("high", "normal", "low")
_FIELDS: Final = frozenset({"namespace", "key", "value", "priority"})
#: How long a full queue may hold one request before 503 QueueFullError.
_BLOCK_TIMEOUT_S: Final = 10.0
#: How long stopping the server waits for the queue to drain (the journal keeps the rest).
_CLOSE_TIMEOUT_S: Final = 30.0


class CollectorHost:
    """The server's one collector: opened with the app, closed (drained) when it stops."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.collector: Collector | None = None

    def open(self) -> None:
        """Start the collector (not on a read-only store: collecting is writing)."""
        if not self.store.readonly and self.collector is None:
            self.collector = self.store.collector(block_timeout=_BLOCK_TIMEOUT_S, close_timeout=_CLOSE_TIMEOUT_S)

    def close(self) -> None:
        """Drain and stop (blocking: call in a worker thread)."""
        collector, self.collector = self.collector, None
        if collector is not None:
            collector.close()

    def figures(self) -> dict[str, Any]:
        """``collector`` figures for /v1/stats and /metrics (zeros while there is none)."""
        collector = self.collector
        if collector is None:
            return {"collector": {"enabled": False, "queue_depth": 0, "breaker": "closed"}}
        s = collector.stats()
        keep = ("collected", "accepted", "applied", "retried", "failed", "dropped", "dead_letters", "batches")
        out: dict[str, Any] = {"enabled": True, **{k: s.get(k, 0) for k in keep}}
        out.update(
            queue_depth=s["queue_depth"],
            oldest_age_s=round(s["oldest_age_s"], 3),
            apply_p99_ms=round(s["apply_p99_ms"], 3),
            breaker=s["breaker"],
            breaker_opened=s["breaker_opened"],
            last_error=s["last_error"],
        )
        return {"collector": out}


def _records(body: Any) -> list[dict[str, Any]]:
    records = body if isinstance(body, list) else [body]
    if not records:
        raise ApiError(400, "Bad Request", "no records: send a record or a non-empty list of records")
    if len(records) > COLLECT_MAX_RECORDS:
        raise ApiError(400, "Bad Request", f"at most {COLLECT_MAX_RECORDS} records in one request, not {len(records)}")
    for i, raw in enumerate(records):
        where = f"records[{i}]" if isinstance(body, list) else "the record"
        if not isinstance(raw, dict):
            raise ApiError(400, "Bad Request", f'{where} must be {{"namespace", "key", "value", "priority"?}}')
        unknown = set(raw) - _FIELDS
        if unknown:
            raise ApiError(400, "Bad Request", f"{where}: unknown fields {sorted(unknown)}")
        if not isinstance(raw.get("namespace"), str) or not isinstance(raw.get("key"), str):
            raise InvalidKeyError(f"{where}: namespace and key must be strings")
        if "value" not in raw:
            raise InvalidValueError(f"{where}: a value is required")
        if raw.get("priority", "normal") not in _PRIORITIES:
            raise InvalidValueError(f"{where}: priority must be one of {list(_PRIORITIES)}")
    return records


async def _collect(server: Server, request: Request) -> Response:
    server.require(request, "write")
    collector = server.collectors.collector
    if collector is None:
        raise ReadOnlyError("the server serves a read-only store: nothing can be collected")
    records = _records(await server.body(request))
    namespaces = [namespace_of(r["namespace"].strip("/")) for r in records]
    for ns in namespaces:
        server.require(request, "write", ns)
    store = server.store

    def validate() -> None:
        # The checks put() makes (key, namespace, value size and depth), on a batch that is
        # never committed: bad input is refused before any record is queued.
        batch = store.batch()
        for ns, raw in zip(namespaces, records, strict=True):
            batch.put(ns, raw["key"], raw["value"])

    await run_in_threadpool(validate)
    started = time.perf_counter()
    error: str | None = None
    ids: list[int] = []
    try:
        for ns, raw in zip(namespaces, records, strict=True):
            ids.append(await collector.acollect(ns, raw["key"], raw["value"], raw.get("priority", "normal")))
    except FileMemError as exc:
        error = type(exc).__name__
        raise
    finally:
        server.figures.observe("collect", time.perf_counter() - started, error)
    return JSONResponse({"accepted": len(ids), "ids": ids}, status_code=202)


def collect_route() -> tuple[str, Any, list[str]]:
    """Path, handler and methods of the collect route."""
    return ("/v1/collect", _collect, ["POST"])
