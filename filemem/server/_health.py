"""Health of a running server: readiness checks, store findings, background maintenance (layer L7).

Invariants: ``/health/live`` answers while the process serves at all;
``/health/ready`` is 503 with the failed check named whenever the store is
closed, opened read-only without ``--readonly``, the watcher or the change
hub is down, dead letters passed the threshold, or the server's collector
has its breaker open or a full queue. Findings come from
``store.health()``; maintenance (``--maintain``) calls ``store.maintain()``
on its own thread at the lowest CPU priority, never on the event loop, and
its results are counted for ``/metrics``. ``store.maintain()`` lowers its own
priority too and skips busy shards instead of waiting (docs/health.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Final

from .. import Collector, FileMemError, Store
from ..admin import to_json_value

if TYPE_CHECKING:
    from ._app import ServerConfig
    from ._hub import ChangeHub

__all__ = ["HealthAdapter"]

_LOG = logging.getLogger("filemem.server")
#: Seconds a maintenance pass may take before it stops and waits for the next.
_MAINTAIN_BUDGET_S: Final = 10.0


class HealthAdapter:
    """Readiness, findings and maintenance for one server."""

    def __init__(self, store: Store, config: ServerConfig) -> None:
        self.store = store
        self.config = config
        self.maintain_runs = 0
        self.maintain_actions = 0
        self.maintain_errors = 0
        self.maintain_last: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ findings

    def findings(self) -> list[dict[str, Any]]:
        """``store.health()`` as JSON dicts (code, severity, message, action, details)."""
        return [to_json_value(f.as_dict()) for f in self.store.health()]

    # ------------------------------------------------------------------ readiness

    def ready(self, hub: ChangeHub, collector: Collector | None = None) -> tuple[bool, list[dict[str, Any]]]:
        """Every readiness check with its outcome (blocking: call in a worker thread)."""
        checks: list[dict[str, Any]] = []

        def check(name: str, ok: bool, detail: str) -> None:
            checks.append({"name": name, "ok": ok, "detail": detail})

        try:
            stats = self.store.stats()
        except FileMemError as exc:
            check("store-open", False, f"{type(exc).__name__}: {exc}")
            return False, checks
        readonly = self.store.readonly
        check(
            "store-open",
            readonly == self.config.readonly,
            "read-only by choice"
            if readonly and self.config.readonly
            else ("read-write" if not readonly else "read-only, but --readonly not given"),
        )
        backend = stats.get("watcher", {}).get("backend", "none")
        check("watcher", backend in ("inotify", "polling"), f"backend {backend}")
        check("change-hub", not hub.closed, "subscribed" if not hub.closed else "closed")
        try:
            letters = len(self.store.dead_letters())
        except FileMemError as exc:
            check("dead-letters", False, f"{type(exc).__name__}: {exc}")
        else:
            limit = self.config.ready_max_dead_letters
            check("dead-letters", letters <= limit, f"{letters} (threshold {limit})")
        if collector is not None:
            health = collector.health()
            check(
                "collector",
                bool(health["ok"]),
                f"queue {health['queue_depth']}, breaker {health['breaker']}"
                + (f", last error {health['last_error']}" if health["last_error"] else ""),
            )
        return all(c["ok"] for c in checks), checks

    # ------------------------------------------------------------------ maintenance

    def figures(self) -> dict[str, Any]:
        """Maintenance figures for /v1/stats and /metrics."""
        return {
            "maintain": {
                "enabled": self._thread is not None,
                "runs": self.maintain_runs,
                "actions": self.maintain_actions,
                "errors": self.maintain_errors,
                "last": self.maintain_last,
            }
        }

    def start_background(self) -> list[asyncio.Task[None]]:
        """Start the maintenance thread if ``--maintain`` asked for it and the store can maintain."""
        interval = self.config.maintain_interval_s
        if interval is None or self.store.readonly:
            return []
        self._thread = threading.Thread(
            target=self._maintain_loop, args=(interval,), name="filemem-maintain", daemon=True
        )
        self._thread.start()
        return [asyncio.get_running_loop().create_task(self._join_on_cancel())]

    async def _join_on_cancel(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self._stop.set()
            thread = self._thread
            if thread is not None:
                await asyncio.to_thread(thread.join, 30.0)

    def _maintain_loop(self, interval: float) -> None:
        # Lowest CPU priority for this thread only (Linux threads have their own nice value).
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._stop.wait(interval):
            try:
                report = self.store.maintain(budget_s=_MAINTAIN_BUDGET_S)
            except FileMemError as exc:
                self.maintain_errors += 1
                _LOG.warning("maintenance pass failed: %s", exc)
                continue
            self.maintain_runs += 1
            counts = dict(report.counts)
            self.maintain_actions += sum(v for k, v in counts.items() if k != "busy_skipped")
            self.maintain_last = {"counts": counts, "duration_s": report.duration_s, "remaining": len(report.remaining)}
