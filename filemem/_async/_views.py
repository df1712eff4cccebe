"""The async faces of a batch, a snapshot, a namespace mapping and a listing (layer L5)."""

from __future__ import annotations

import concurrent.futures
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._backends import ReadView
from .._errors import InvalidValueError, StoreClosedError
from .._store import Batch
from .._types import Item, NamespaceLike
from ._runner import finish

if TYPE_CHECKING:
    from ._store import AsyncStore

__all__ = ["AsyncBatch", "AsyncListing", "AsyncMappingView", "AsyncSnapshot"]

T = TypeVar("T")
_MISSING: Any = object()


class AsyncListing(Generic[T]):
    """A listing that can be awaited (the whole list) or iterated with ``async for``.

    >>> items = await store.items("ns")        # doctest: +SKIP
    >>> async for item in store.items("ns"):   # doctest: +SKIP
    ...     print(item.key)
    """

    def __init__(self, fetch: Callable[[], Awaitable[list[T]]]) -> None:
        self._fetch = fetch

    def __await__(self) -> Generator[Any, None, list[T]]:
        return self._fetch().__await__()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        for x in await self._fetch():
            yield x


class AsyncBatch:
    """Writes collected on the loop and committed together in one worker job (see AsyncStore.batch).

    Queuing (``put``/``delete``/``update``) validates and encodes the value at
    once, like the sync Batch, and does no I/O; the commit on a clean exit of
    ``async with`` is one job, all or nothing. Cancelled before the commit
    started: nothing is written. Cancelled during it: it completes first.
    """

    def __init__(self, store: AsyncStore, batch: Batch) -> None:
        self._store = store
        self._batch = batch

    @property
    def results(self) -> list[Any]:
        """One result per queued operation, after the commit."""
        return self._batch.results

    def put(
        self,
        namespace: NamespaceLike,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
    ) -> AsyncBatch:
        """Queue a put (see Store.put); no I/O."""
        self._batch.put(namespace, key, value, ttl=ttl, if_version=if_version)
        return self

    def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = None) -> AsyncBatch:
        """Queue a delete (see Store.delete); no I/O."""
        self._batch.delete(namespace, key, if_version=if_version)
        return self

    def update(
        self, namespace: NamespaceLike, key: str, fn: Callable[[Any], Any], *, ttl: float | None = None
    ) -> AsyncBatch:
        """Queue an atomic read-modify-write (see Store.update); ``fn`` runs in the worker thread."""
        if inspect.iscoroutinefunction(fn):
            raise InvalidValueError("update() needs a plain function: it runs under a file lock, in a worker thread")
        self._batch.update(namespace, key, fn, ttl=ttl)
        return self

    def __len__(self) -> int:
        return len(self._batch)

    async def commit(self) -> list[Any]:
        """Commit now (``async with`` does this for you)."""
        return await self._store._runner.run(self._batch.commit)

    async def __aenter__(self) -> AsyncBatch:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Same rule as the sync batch: commit on a clean exit, drop on any
        # exception, cancellation included (nothing was written yet).
        if exc_type is None:
            if not self._batch.done:
                await self.commit()
        else:
            self._batch.__exit__(exc_type, exc, tb)


class AsyncSnapshot:
    """A consistent read view (see AsyncStore.snapshot), driven from one thread of its own.

    The snapshot holds shared locks between awaits. Its reads run on a thread
    reserved for it, never in the store's shared pool: writers queued in the
    pool for a shard the snapshot holds must not be able to starve the very
    read that lets the snapshot finish. Leaving the block, normally, by an
    exception or by cancellation, always releases every lock.
    """

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._snap: ReadView | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def _call(self, fn: Callable[[ReadView], T]) -> T:
        snap, pool = self._snap, self._pool
        if pool is None or snap is None:
            raise StoreClosedError("snapshot is not open (use it as `async with store.snapshot() as snap`)")
        return await finish(pool, fn, snap)

    async def get(self, namespace: NamespaceLike, key: str, default: Any = None) -> Any:
        """The value at ``key`` as of this snapshot, or ``default``."""
        return await self._call(lambda snap: snap.get(namespace, key, default))

    async def get_item(self, namespace: NamespaceLike, key: str) -> Item | None:
        """The record at ``key`` as of this snapshot, or None."""
        return await self._call(lambda snap: snap.get_item(namespace, key))

    def items(self, namespace: NamespaceLike) -> AsyncListing[Item]:
        """Every live record of a namespace as of this snapshot, sorted by key (await it or ``async for``)."""
        return AsyncListing(lambda: self._call(lambda snap: snap.items(namespace)))

    def keys(self, namespace: NamespaceLike) -> AsyncListing[str]:
        """Every live key of a namespace as of this snapshot, sorted."""
        return AsyncListing(lambda: self._call(lambda snap: snap.keys(namespace)))

    async def __aenter__(self) -> AsyncSnapshot:
        if self._pool is not None:
            raise StoreClosedError("a snapshot can be entered once")
        runner = self._store._runner
        if runner.closed:
            raise StoreClosedError("async store is closed")
        self._pool = runner.snapshot_pool()

        def open_snapshot() -> ReadView:
            # Kept as soon as it exists: on a format-2 store opening pins the
            # log (a shared fold lock), and a task cancelled while the open ran
            # still gets it back from finish() only as a CancelledError.
            snap = self._snap = self._store._store.snapshot()
            return snap

        try:
            await finish(self._pool, open_snapshot)
        except BaseException:
            await self.close()  # releases what an open that completed anyway holds
            raise
        return self

    async def close(self) -> None:
        """Release every lock the snapshot holds (``async with`` does this for you)."""
        snap, self._snap = self._snap, None
        try:
            if snap is not None and self._pool is not None:
                # Never withdrawn: this is what frees the locks of a cancelled task.
                await finish(self._pool, snap.close, withdraw=False)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # The one thread is idle (every job was awaited to its end).
            self._store._runner.return_snapshot_pool(pool)

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncMappingView:
    """A dict-like async view of one namespace (see AsyncStore.mapping).

    >>> m = store.mapping("agent-1/facts")   # doctest: +SKIP
    >>> await m.set("sky", "blue"); await m.get("sky")  # doctest: +SKIP
    'blue'
    """

    def __init__(self, store: AsyncStore, namespace: tuple[str, ...]) -> None:
        self._store = store
        self.namespace = namespace

    async def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default``."""
        return await self._store.get(self.namespace, key, default)

    async def getitem(self, key: str) -> Any:
        """The value at ``key``; KeyError if absent (like ``m[key]``)."""
        value = await self._store.get(self.namespace, key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` at ``key`` (like ``m[key] = value``)."""
        await self._store.put(self.namespace, key, value)

    async def delete(self, key: str) -> None:
        """Remove ``key``; KeyError if absent (like ``del m[key]``)."""
        if not await self._store.delete(self.namespace, key):
            raise KeyError(key)

    async def contains(self, key: str) -> bool:
        """Whether ``key`` holds a live record."""
        return await self._store.get_item(self.namespace, key) is not None

    async def len(self) -> int:
        """How many live keys the namespace holds."""
        return len(await self._store.keys(self.namespace))

    def __aiter__(self) -> AsyncIterator[str]:
        return self._store.keys(self.namespace).__aiter__()
