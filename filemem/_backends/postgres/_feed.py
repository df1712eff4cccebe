"""The change feed of a PostgreSQL store: LISTEN for the NOTIFY of each commit, resume from the outbox (issue 16).

Invariant: a subscriber sees every committed write transaction once, in
commit order, or is told it missed some (a ``Change`` of kind ``"missed"``),
never silently nothing. It holds because each write transaction inserts one
outbox row under the feed lock (ids ascend in commit order) and sends one
``NOTIFY`` carrying that id, and the listener remembers the last id it
delivered: after a lost connection it reconnects, ``LISTEN``s again, reads
the outbox rows after that id, and when the pruning of old rows has passed
it (``outbox_pruned_below`` in ``filemem_meta``) it publishes ``missed``.
Notifications at or below the last id are duplicates of rows already read
and are dropped. Ids skipped by a rolled-back transaction are no gap.

The listener is one thread per store object, started by the first
subscription, on a connection of its own (never a pooled one), and joined
when the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg

from ..._feed import Change, ChangeFeed, Subscription
from ._connect import Connections
from ._names import INTERNAL_TEXT, decode_ns

__all__ = ["ServerFeed"]

_log = logging.getLogger("filemem.postgres")

#: How long the listener waits for a notification before it checks for close().
_WAIT_S: Final = 0.2
#: Longest pause between reconnection attempts.
_MAX_BACKOFF_S: Final = 2.0


class ServerFeed(ChangeFeed):
    """Fans the server's committed changes out to subscriptions (the file feed's subscriptions, reused)."""

    def __init__(self, conns: Connections, channel: str) -> None:
        super().__init__("")
        self._conns = conns
        self._channel = channel
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self.last_id = 0
        self.reconnects = 0
        #: Test hook: the backend pid of the listener's connection (to kill it).
        self.listener_pid: int | None = None

    def _note_generations(self, prefix: tuple[str, ...]) -> None:
        """Nothing to note: outbox ids, not shard generations, order the server's changes."""

    def _ensure_listening(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._ready.clear()
            self._thread = threading.Thread(target=self._run, name="filemem-pg-listener", daemon=True)
            self._thread.start()
        # Subscribing returns once we listen: a write committed after it is seen.
        self._ready.wait(30.0)
        if self._start_error is not None:
            err, self._start_error = self._start_error, None
            self.close_listener()
            raise err

    def subscribe(self, callback: Callable[[Change], object], prefix: tuple[str, ...], max_queue: int) -> Subscription:
        self._ensure_listening()
        return super().subscribe(callback, prefix, max_queue)

    def subscribe_async(self, prefix: tuple[str, ...], max_queue: int) -> Subscription:
        # Called on the loop: the first subscription connects on the loop's thread (once per store).
        asyncio.get_running_loop()
        self._ensure_listening()
        return super().subscribe_async(prefix, max_queue)

    # ------------------------------------------------------------------ the listener thread

    def _connect(self, first: bool) -> psycopg.Connection[Any]:
        conn = self._conns.connect()
        try:
            conn.execute(f'LISTEN "{self._channel}"')
            self.listener_pid = conn.info.backend_pid
            if first:
                row = conn.execute("SELECT coalesce(max(id), 0) FROM filemem_outbox").fetchone()
                self.last_id = int(row[0]) if row else 0
            else:
                self._catch_up(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _catch_up(self, conn: psycopg.Connection[Any]) -> None:
        """After a reconnection: deliver the outbox rows we did not see, or say they are lost."""
        row = conn.execute("SELECT value FROM filemem_meta WHERE key = 'outbox_pruned_below'").fetchone()
        pruned_below = int(row[0]) if row else 0
        if pruned_below > self.last_id + 1:
            self.publish_missed()
            self.last_id = pruned_below - 1
        for ident, at, changes in conn.execute(
            "SELECT id, at, changes FROM filemem_outbox WHERE id > %s ORDER BY id", (self.last_id,)
        ):
            self._deliver(int(ident), float(at), changes)

    def _deliver(self, ident: int, at: float, changes: list[list[Any]]) -> None:
        if ident <= self.last_id:
            return  # already delivered (read from the outbox before its notification came)
        self.last_id = ident
        for ns_text, keys in changes:
            if ns_text.startswith(INTERNAL_TEXT):
                continue
            namespace = decode_ns(ns_text)
            if namespace is None:
                continue
            self._fan_out(Change(namespace, "", "write", at, tuple(keys) if keys is not None else None))

    def _on_notify(self, conn: psycopg.Connection[Any], payload: str) -> None:
        head, _, body = payload.partition(" ")
        ident = int(head)
        if ident <= self.last_id:
            return
        changes = json.loads(body)
        if ident > self.last_id + 1 or changes is None or any(keys is None for _, keys in changes):
            # A gap (NOTIFY arrives in commit order, so: a rolled-back id, or
            # rows we were away for), or a payload too big to name its keys:
            # the outbox rows say exactly.
            self._catch_up(conn)
            if ident <= self.last_id:
                return
        self._deliver(ident, time.time(), changes)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        backoff = 0.05
        first = True
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = self._connect(first)
                        if not first:
                            self.reconnects += 1
                        first = False
                        backoff = 0.05
                        self._ready.set()
                    # Drained first: the generator holds the connection, and a
                    # catch-up must query on it.
                    notes = list(conn.notifies(timeout=_WAIT_S, stop_after=1))
                    for note in notes:
                        self._on_notify(conn, note.payload)
                except (psycopg.Error, OSError) as exc:
                    if first:
                        self._start_error = exc
                        self._ready.set()
                        return
                    _log.warning("change feed: connection lost (%s); reconnecting", exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    conn = None
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                except Exception as exc:  # a broken payload: never kill the feed silently
                    _log.warning("change feed: %s; telling subscribers they missed changes", exc)
                    self.publish_missed()
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def close_listener(self) -> None:
        """Stop the listener thread and join it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(10.0)

    def close(self) -> None:
        """End every subscription and the listener."""
        super().close()
        self.close_listener()
