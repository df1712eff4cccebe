"""Reads of a server store over psycopg's async connections and ``AsyncConnectionPool`` (issue 16).

Invariant: the same statements, the same records and the same errors as the
sync backend's reads (``PostgresBackend.read``/``live``/``keys``), run on the
event loop instead of in a worker thread. A read has no side effect, so a
cancelled one leaves nothing behind: the pool discards or resets the
connection it was using. The pool belongs to the loop that opened it (asyncio
sockets cannot move between loops); :meth:`AsyncReads.usable` says whether
the running loop is that one, and the caller takes the thread path otherwise.

Writes stay on the sync backend (in the AsyncStore's worker threads): a write
is a transaction of several statements under advisory locks with a
serialization-failure retry loop and the feed's outbox, and one implementation
of it is what the conformance suite checks.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..._errors import LockTimeout, StorageError, StoreClosedError
from ..._shard import Record
from ...codecs import Codec
from ._connect import _KEEPALIVES as KEEPALIVES  # one set of keepalives for both pools
from ._connect import RetryableError, translate
from ._names import encode_ns
from ._writes import NOW_SQL, record_of

__all__ = ["AsyncReads"]

_LIVE: Final = f"(expires_at IS NULL OR expires_at > {NOW_SQL})"
_READ: Final = (
    "SELECT value, version, created_at, updated_at, expires_at FROM filemem_records"
    f" WHERE ns = %s AND key = %s AND {_LIVE}"
)
_LIVE_ROWS: Final = (
    "SELECT key, value, version, created_at, updated_at, expires_at FROM filemem_records"
    f" WHERE ns = %s AND {_LIVE} ORDER BY key"
)
_KEYS: Final = f"SELECT key FROM filemem_records WHERE ns = %s AND {_LIVE} ORDER BY key"


#: How long closing waits for the pool's workers to end their task (see AsyncReads.close).
CLOSE_TIMEOUT_S = 30.0


class AsyncReads:
    """A lazily opened async pool and the read statements of the sync backend."""

    def __init__(self, url: str, settings: list[str], codec: Codec, *, lock_timeout_s: float, max_size: int) -> None:
        self._url = url
        self._settings = settings
        self._codec = codec
        self._lock_timeout_s = lock_timeout_s
        self._max_size = max_size
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None
        self.closed = False
        self.counters: dict[str, int] = {"async_reads": 0}

    def usable(self) -> bool:
        """True on the loop that opened the pool (or before it is opened): else take the thread path."""
        if self.closed:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return self._loop is None or self._loop is loop

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for sql in self._settings:
            await conn.execute(sql)

    async def _get_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._loop = asyncio.get_running_loop()
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                    self._url,
                    min_size=min(4, self._max_size),
                    max_size=self._max_size,
                    kwargs={"autocommit": True, **KEEPALIVES},
                    configure=self._configure,
                    open=False,
                    name="filemem-pg-async",
                    timeout=max(self._lock_timeout_s, 1.0),
                )
                try:
                    await pool.open(wait=True, timeout=30.0)
                except PoolTimeout as exc:
                    await pool.close()
                    raise StorageError(f"cannot connect to the PostgreSQL server: {exc}") from exc
                self._pool = pool
        return self._pool

    async def _query(self, what: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self.closed:
            raise StoreClosedError("async store is closed")
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(sql, params)
                rows = await cur.fetchall()
        except PoolTimeout as exc:
            raise LockTimeout(f"no free database connection within {self._lock_timeout_s:.3f}s") from exc
        except psycopg.Error as exc:
            err = translate(exc, what, timeout_s=self._lock_timeout_s)
            raise (StoreClosedError(str(err)) if isinstance(err, RetryableError) else err) from exc
        self.counters["async_reads"] += 1
        return rows

    async def read(self, ns: tuple[str, ...], key: str) -> Record | None:
        """The live record at ``key``, or None (``PostgresBackend.read``)."""
        rows = await self._query("read", _READ, (encode_ns(ns), key))
        return record_of(rows[0], self._codec) if rows else None

    async def live(self, ns: tuple[str, ...]) -> dict[str, Record]:
        """Every live record of ``ns`` by key (``PostgresBackend.live``)."""
        rows = await self._query("listing", _LIVE_ROWS, (encode_ns(ns),))
        return {r[0]: record_of(r[1:], self._codec) for r in rows}

    async def keys(self, ns: tuple[str, ...]) -> list[str]:
        """Every live key of ``ns``, sorted (``PostgresBackend.keys``)."""
        return [r[0] for r in await self._query("listing", _KEYS, (encode_ns(ns),))]

    async def close(self) -> None:
        """Close the pool (on its own loop; a pool never opened needs nothing)."""
        self.closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            # psycopg-pool waits this long for its workers to end (5 s by default). A worker busy
            # adding a connection under load can take longer; one left behind meets asyncio.run's
            # final cancellation, which a pool worker can swallow (psycopg/psycopg#1345), and the
            # program hangs at exit (seen once in CI at load 10+).
            await pool.close(timeout=CLOSE_TIMEOUT_S)
