"""The AsyncStore's reads on a server store: over an async connection pool on the loop, not in threads (issue 16).

Invariant: a read answered here returns exactly what the sync Store's read
returns (same statements, same validation, same errors); anything this path
cannot serve (another event loop than the pool's, a file store, a closed
store) returns ``NOT_HERE`` and the caller takes the worker-thread path.
Reads have no side effect, so a cancelled one leaves nothing behind: there
is no lock to release and no file to remove (docs/async.md).

Why only reads: a write is one transaction of several statements under
advisory locks, retried on a serialization failure, with the change feed's
outbox row; it runs in the worker thread through the one implementation the
conformance suite checks.

Which path is used: ``tools/bench_pg.py --aio-only`` measures both read
paths in one run. On a quiet 2-core machine the pool was 1.3-1.4x faster
than the worker threads with 1 coroutine and 1.9-2.4x with 16
(docs/scale-out.md has the figures); under load 15-28 from other work the
threads had looked faster, each wakeup of the loop competing for a core. So
``USE_ASYNC_POOL`` is True and a server AsyncStore reads over the pool;
``AsyncStore(url, server_reads="threads")`` (or this flag) keeps reads in
the worker threads. Both paths run in tests/aio and tests/pg.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from .._names import validate_key
from .._snapshot import item_of
from .._store import Store
from .._types import Item, NamespaceLike

__all__ = ["NOT_HERE", "USE_ASYNC_POOL", "PoolReads"]

#: Whether an AsyncStore on a server reads over the async pool by default (measured faster on a quiet machine).
USE_ASYNC_POOL = True
NOT_HERE: Final[Any] = object()


class PoolReads:
    """The async-pool reads of one AsyncStore (None of them on a file store)."""

    def __init__(self, store: Store, max_size: int, *, enabled: bool | None = None) -> None:
        self._store = store
        make = getattr(store._backend, "async_reads", None)
        use = USE_ASYNC_POOL if enabled is None else enabled
        self._reads: Any = make(max_size) if (use and callable(make)) else None

    @property
    def active(self) -> bool:
        """Whether this store reads over the pool at all (a server store)."""
        return self._reads is not None

    def _here(self) -> Any:
        reads = self._reads
        if reads is None or not reads.usable():
            return None
        self._store._backend.check_open()
        return reads

    async def get(self, namespace: NamespaceLike, key: str, default: Any) -> Any:
        reads = self._here()
        if reads is None:
            return NOT_HERE
        rec = await reads.read(self._store._ns(namespace), key)
        return default if rec is None else rec["value"]

    async def get_item(self, namespace: NamespaceLike, key: str) -> Any:
        reads = self._here()
        if reads is None:
            return NOT_HERE
        ns = self._store._ns(namespace)
        rec = await reads.read(ns, validate_key(key))
        return None if rec is None else item_of(ns, key, rec)

    async def items(self, namespace: NamespaceLike) -> list[Item] | Any:
        reads = self._here()
        if reads is None:
            return NOT_HERE
        ns = self._store._ns(namespace)
        return [item_of(ns, key, rec) for key, rec in sorted((await reads.live(ns)).items())]

    async def keys(self, namespace: NamespaceLike) -> list[str] | Any:
        reads = self._here()
        if reads is None:
            return NOT_HERE
        got: list[str] = await reads.keys(self._store._ns(namespace))
        return got

    def stats(self) -> dict[str, int]:
        """Reads served by the pool so far (0 on a file store)."""
        return dict(self._reads.counters) if self._reads is not None else {}

    async def close(self) -> None:
        """Close the pool on its own loop (from another loop: hand the close over to it, if it still runs)."""
        reads, self._reads = self._reads, None
        if reads is None:
            return
        loop = reads._loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - close() is a coroutine
            current = None
        if loop is None or loop is current:
            await reads.close()
        elif not loop.is_closed() and loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(reads.close(), loop))
        else:
            reads.closed = True  # its loop is gone, and its sockets with it
