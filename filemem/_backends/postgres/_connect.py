"""Connections to the server and the one place psycopg errors become filemem errors (issue 16).

Invariant: nothing above this module sees a psycopg exception. A lock or
statement timeout becomes ``LockTimeout``; a write refused by a read-only
transaction ``ReadOnlyError``; a serialization failure or deadlock is
``RetryableError`` (the caller runs the whole transaction again); anything else
(connection lost, server down, disk full on the server) ``StorageError``.

A connection lost while ``COMMIT`` was in flight leaves the outcome unknown
to the client: such a failure is a ``StorageError`` whose message says so.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from ..._errors import FileMemError, LockTimeout, ReadOnlyError, StorageError
from ..._types import Durability

__all__ = ["Connections", "RetryableError", "translate"]

#: SQLSTATEs after which the whole transaction may simply run again.
_RETRY_STATES: Final = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
#: TCP keepalives: a dead server (or a cut network) is noticed in about 30 s, not two hours.
_KEEPALIVES: Final[dict[str, Any]] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 4,
}


class RetryableError(Exception):
    """The transaction lost a serialization race or a deadlock: run it again."""


def translate(exc: psycopg.Error, what: str, *, timeout_s: float = 0.0) -> FileMemError | RetryableError:
    """The filemem error for a psycopg error met while doing ``what``."""
    state = exc.sqlstate or ""
    if state in _RETRY_STATES:
        return RetryableError(str(exc))
    if isinstance(exc, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)):
        return LockTimeout(f"{what}: no lock within {timeout_s:.3f}s ({exc.diag.message_primary})", waited_s=timeout_s)
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return ReadOnlyError(f"{what}: the server refused a write ({exc.diag.message_primary})")
    detail = (exc.diag.message_primary if exc.diag else None) or str(exc).strip() or type(exc).__name__
    return StorageError(f"{what}: PostgreSQL said: {detail}")


class Connections:
    """A pool of autocommit connections to one store's schema, reset after a fork.

    Every connection gets the store's ``lock_timeout`` and, for
    ``durability="flush"``, ``synchronous_commit=off`` (a commit survives a
    crash of the client, not of the server machine: the analogue of skipping
    fsync). Snapshots and the change-feed listener take a connection of their
    own (``connect()``), never a pooled one held for long.
    """

    def __init__(
        self, url: str, *, durability: Durability, lock_timeout_s: float, readonly: bool, max_size: int
    ) -> None:
        self.url = url
        self.lock_timeout_s = lock_timeout_s
        settings = [f"SET lock_timeout = {int(lock_timeout_s * 1000)}"]
        if durability == "flush":
            settings.append("SET synchronous_commit = off")
        if readonly:
            settings.append("SET default_transaction_read_only = on")
        self._settings = settings
        self._max_size = max_size
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: ``fetch``'s connection and cursor, held out of the pool by whichever thread is in ``fetch``.
        self._hot: tuple[psycopg.Connection[Any], psycopg.Cursor[Any]] | None = None
        self._hot_lock = threading.Lock()
        self._closing = False
        self._forked_hot: tuple[psycopg.Connection[Any], psycopg.Cursor[Any]] | None = None
        self._pool = self._new_pool()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        for sql in self._settings:
            conn.execute(sql)

    def _new_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._max_size,
            kwargs={"autocommit": True, **_KEEPALIVES},
            configure=self._configure,
            open=False,
            name="filemem-pg",
            timeout=max(self.lock_timeout_s, 1.0),
        )
        try:
            pool.open(wait=True, timeout=30.0)
        except PoolTimeout as exc:
            pool.close()
            raise StorageError(f"cannot connect to the PostgreSQL server of {_redact(self.url)}: {exc}") from exc
        return pool

    def _current(self) -> ConnectionPool[psycopg.Connection[Any]]:
        if self._pid != os.getpid():
            # A forked child must not share its parent's sockets: a new pool
            # (the parent's stays the parent's; its threads did not come along).
            with self._lock:
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    # The parent's hot connection is the parent's: forget it, never close its socket here.
                    self._forked_hot = self._hot
                    self._hot = None
                    self._hot_lock = threading.Lock()
                    self._pool = self._new_pool()
        return self._pool

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for one short piece of work (a broken one is discarded on return)."""
        try:
            cm = self._current().connection()
            conn = cm.__enter__()
        except PoolTimeout as exc:
            raise LockTimeout(f"no free database connection within {self.lock_timeout_s:.3f}s") from exc
        except psycopg.Error as exc:
            err = translate(exc, "connecting")
            raise (StorageError(str(err)) if isinstance(err, RetryableError) else err) from exc
        try:
            yield conn
        except BaseException as exc:
            cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            cm.__exit__(None, None, None)

    def fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows: the hot read path (a get is one round trip).

        The same as ``with conn() as c: c.execute(...).fetchall()``, but the
        first thread in holds one pooled connection and its cursor for good
        (``_hot``): no pool check-out and check-in per call (about 40 us of the
        client's Python per get on a loaded machine, against raw psycopg's
        one ``execute``) and no new cursor per call. Binary results: ``bytea``
        arrives as bytes, not hex text to decode. A thread that finds the hot
        connection busy takes a pooled one as before; a broken hot connection
        goes back to the pool (which discards it) and the next call takes another.
        """
        if self._pid == os.getpid() and self._hot_lock.acquire(blocking=False):
            try:
                return self._fetch_hot(sql, params)
            finally:
                self._hot_lock.release()
        return self._fetch_pooled(sql, params)

    def _fetch_hot(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        hot = self._hot
        if hot is None:
            if self._max_size < 2 or self._closing:
                return self._fetch_pooled(sql, params)  # never hold the only connection writes need
            try:
                conn = self._pool.getconn()
            except PoolTimeout as exc:
                raise LockTimeout(f"no free database connection within {self.lock_timeout_s:.3f}s") from exc
            except psycopg.Error as exc:
                err = translate(exc, "connecting")
                raise (StorageError(str(err)) if isinstance(err, RetryableError) else err) from exc
            hot = self._hot = (conn, conn.cursor(binary=True))
        try:
            return hot[1].execute(sql, params).fetchall()
        except BaseException:
            conn = hot[0]
            if conn.broken or conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self._hot = None
                self._pool.putconn(conn)  # discarded there if broken, rolled back if not idle
            raise

    def _fetch_pooled(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        pool = self._pool if self._pid == os.getpid() else self._current()
        try:
            conn = pool.getconn()
        except PoolTimeout as exc:
            raise LockTimeout(f"no free database connection within {self.lock_timeout_s:.3f}s") from exc
        except psycopg.Error as exc:
            err = translate(exc, "connecting")
            raise (StorageError(str(err)) if isinstance(err, RetryableError) else err) from exc
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            pool.putconn(conn)  # a broken connection is discarded there, as by connection()

    def connect(self) -> psycopg.Connection[Any]:
        """A connection of its own (not pooled), configured like the pooled ones; the caller closes it."""
        try:
            conn = psycopg.connect(self.url, autocommit=True, **_KEEPALIVES)
            self._configure(conn)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to {_redact(self.url)}: {exc}") from exc
        return conn

    def close(self) -> None:
        """Close every pooled connection and join the pool's threads (only in the process that opened it)."""
        if self._pid == os.getpid():
            self._closing = True
            with self._hot_lock:  # a fetch in flight finishes first
                hot, self._hot = self._hot, None
            if hot is not None:
                self._pool.putconn(hot[0])
            self._pool.close(timeout=5.0)


def _redact(url: str) -> str:
    """The URL without its password (error messages must not leak it)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "<unparsable URL>"
    host = info.get("host", "")
    return f"postgresql://{info.get('user', '')}@{host}:{info.get('port', '')}/{info.get('dbname', '')}"
