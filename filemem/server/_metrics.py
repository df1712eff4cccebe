"""Figures of a running server: one source for ``/v1/stats`` and ``/metrics`` (layer L7).

Invariant: ``/metrics`` is rendered from :meth:`Figures.snapshot`, the same
dict ``/v1/stats`` returns, so the two never disagree. The store's own figures
come from ``store.stats()`` (this process's engine, cache, watcher and feed
counters) plus store-wide ones any process sees: live and crashed sessions,
dead letters. Request counts and latencies are the server's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import Store
from ._hub import ChangeHub

__all__ = ["Figures"]

#: Latency buckets in seconds: a cached get is microseconds, a fsynced put milliseconds.
_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: store.stats() counters exposed as ``filemem_<name>_total``.
_ENGINE_COUNTERS: Final = {
    "shard_parses": "shard files parsed by the server process",
    "shard_writes": "shard files written by the server process",
    "splits": "shard splits done by the server process",
    "batches_recovered": "unfinished batches of dead writers the server process recovered",
    "lock_retries": "lock waits: times the server process found a lock held and waited",
    "split_failures": "shard splits that failed and were left for later",
}

#: The server collector's counters (POST /v1/collect) exposed as ``filemem_collector_<name>_total``.
_COLLECTOR_COUNTERS: Final = {
    "collected": "records POST /v1/collect queued in the server's collector",
    "accepted": "of those, records written and fsynced to the collector's journal",
    "applied": "records the server's collector applied to the store",
    "dead_letters": "records the server's collector moved to the dead-letter file",
    "dropped": "records the server's collector dropped (a full queue with on_full=drop_oldest)",
}


class Figures:
    """Counters and histograms of one server, and the store figures read at scrape time."""

    def __init__(self, store: Store, hub: ChangeHub, extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.store = store
        self.hub = hub
        self.extra = extra
        self.registry = CollectorRegistry(auto_describe=False)
        self.started = time.time()
        self.operations = Counter(
            "filemem_operations", "store operations the server ran, by kind", ["kind"], registry=self.registry
        )
        self.latency = Histogram(
            "filemem_operation_seconds",
            "store operation latency in the server, by kind",
            ["kind"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "filemem_errors", "operations that raised, by filemem exception", ["exception"], registry=self.registry
        )
        self.requests = Counter(
            "filemem_http_requests", "HTTP requests, by status class", ["status"], registry=self.registry
        )
        self._lock = threading.Lock()
        self.lock_timeouts = 0
        self.ops: dict[str, int] = {}
        self.registry.register(_StoreCollector(self))

    def observe(self, kind: str, seconds: float, error: str | None) -> None:
        """One operation done (called from worker threads)."""
        self.operations.labels(kind).inc()
        self.latency.labels(kind).observe(seconds)
        with self._lock:
            self.ops[kind] = self.ops.get(kind, 0) + 1
            if error == "LockTimeout":
                self.lock_timeouts += 1
        if error is not None:
            self.errors.labels(error).inc()

    def snapshot(self) -> dict[str, Any]:
        """Every figure, as ``/v1/stats`` returns it (blocking: call in a worker thread)."""
        store = self.store
        process = store.stats()
        sessions = store.sessions(alive=None)
        hub = self.hub
        with self._lock:
            ops = dict(self.ops)
            lock_timeouts = self.lock_timeouts
        out: dict[str, Any] = {
            "store": process,
            "sessions": {
                "live": sum(1 for s in sessions if s.alive),
                "crashed": sum(1 for s in sessions if s.state == "crashed"),
                "total": len(sessions),
            },
            "dead_letters": len(store.dead_letters()),
            "locks": {"waits": process.get("lock_retries", 0), "timeouts": lock_timeouts},
            "operations": ops,
            "websocket": {
                "clients": hub.clients,
                "messages": hub.messages,
                "missed_sent": hub.missed_sent,
                "closed_slow": hub.clients_closed_slow,
                "resolve_errors": hub.resolve_errors,
                "frames_direct": hub.frames_direct,
                "frames_ordinary": hub.frames_ordinary,
                "cursor": str(hub.cursor),
                "retained": len(hub._ring),
            },
            "uptime_s": round(time.time() - self.started, 3),
        }
        if self.extra is not None:
            out.update(self.extra())
        return out


class _StoreCollector(Collector):
    """Reads the snapshot at scrape time and renders it as metric families."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        snap = self.figures.snapshot()
        yield from render(snap)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def render(snap: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of a snapshot (also used by the tests to compare with /v1/stats)."""
    store = snap["store"]
    cache = store.get("cache", {})
    watcher = store.get("watcher", {})
    feed = store.get("feed", {})
    for name, doc in _ENGINE_COUNTERS.items():
        yield _counter(f"filemem_{name}", doc, store.get(name, 0))
    yield _counter("filemem_cache_hits", "reads answered from the server process's cache", cache.get("hits", 0))
    yield _counter("filemem_cache_misses", "reads that had to read a shard file", cache.get("misses", 0))
    yield _gauge("filemem_cache_entries", "shards in the server process's cache", cache.get("entries", 0))
    yield _gauge("filemem_cache_bytes", "bytes of shards in the server process's cache", cache.get("bytes", 0))
    yield _counter("filemem_lock_waits", "times a lock was found held and waited for", snap["locks"]["waits"])
    yield _counter("filemem_lock_timeouts", "operations that raised LockTimeout", snap["locks"]["timeouts"])
    yield _counter("filemem_watcher_events", "file-system events the watcher handled", watcher.get("events", 0))
    yield _counter("filemem_watcher_events_lost", "times the watcher lost events", watcher.get("events_lost", 0))
    yield _gauge("filemem_feed_subscribers", "change-feed subscribers in the server", feed.get("subscribers", 0))
    yield _counter("filemem_feed_published", "changes the feed published", feed.get("published", 0))
    yield _gauge("filemem_sessions_live", "live sessions of every process", snap["sessions"]["live"])
    yield _gauge("filemem_sessions_crashed", "sessions whose owner died (kept an hour)", snap["sessions"]["crashed"])
    yield _gauge("filemem_dead_letters", "records collectors could not apply", snap["dead_letters"])
    collector = snap.get("collector", {})
    yield _gauge(
        "filemem_collector_queue_depth", "records queued in the server's collectors", collector.get("queue_depth", 0)
    )
    yield _gauge(
        "filemem_collector_breaker_open",
        "1 while a collector breaker of the server is open or half-open",
        1 if collector.get("breaker", "closed") != "closed" else 0,
    )
    for name, doc in _COLLECTOR_COUNTERS.items():
        yield _counter(f"filemem_collector_{name}", doc, collector.get(name, 0))
    ws = snap["websocket"]
    yield _gauge("filemem_websocket_clients", "connected WebSocket clients", ws["clients"])
    yield _counter("filemem_websocket_messages", "change and session messages numbered by the hub", ws["messages"])
    yield _counter("filemem_websocket_missed", "missed messages sent to clients", ws["missed_sent"])
    yield _counter("filemem_websocket_closed_slow", "clients closed for not reading", ws["closed_slow"])
    yield _counter(
        "filemem_websocket_frames_direct", "frames written to a client as the hub's encoded bytes", ws["frames_direct"]
    )
    yield _counter(
        "filemem_websocket_frames_ordinary",
        "frames sent through the ASGI send (buffer full, or not uvicorn)",
        ws["frames_ordinary"],
    )
    maintain = snap.get("maintain")
    if isinstance(maintain, dict):
        yield _counter("filemem_maintain_runs", "maintenance passes run", maintain.get("runs", 0))
        yield _counter("filemem_maintain_actions", "maintenance actions carried out", maintain.get("actions", 0))
        yield _counter("filemem_maintain_errors", "maintenance passes that failed", maintain.get("errors", 0))
