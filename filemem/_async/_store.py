"""AsyncStore: the sync Store's twin, every method a coroutine of the same name (layer L5)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from .._collector import Collector, CollectorConfig, DeadLetter
from .._errors import InvalidValueError
from .._feed import Change, Subscription
from .._freshness import WatchMode
from .._health import LOCK_WINDOW_S, HealthFinding, MaintenanceReport
from .._search import Embed, SearchHit
from .._sessions import SessionInfo
from .._store import Store
from .._types import Consistency, Durability, Finding, Item, NamespaceLike
from ..codecs import Codec
from ._pool import NOT_HERE, PoolReads
from ._runner import DEFAULT_MAX_IN_FLIGHT, Runner, finish
from ._sessions import AsyncSession, SessionStart
from ._views import AsyncBatch, AsyncListing, AsyncMappingView, AsyncSnapshot

__all__ = ["AsyncStore"]

_DONE: Final[Any] = object()


class AsyncStore:
    """The async twin of :class:`filemem.Store`: same methods, same arguments, awaited.

    Every call runs whole in a worker thread (lock wait, read-modify-write,
    fsync, rename), so the event loop never blocks on the disk or on a lock.
    At most ``max_in_flight`` calls run at once; the rest wait their turn
    (``stats()["aio"]["queue_depth"]``). A cancelled call either never started
    or ran to its end before the cancellation is raised: no lock stays held,
    no temp file stays behind (see docs/async.md).

    Example::

        import asyncio
        from filemem.aio import AsyncStore

        async def main() -> None:
            async with AsyncStore("./memories") as store:
                await store.put("agent-1/facts", "sky", "blue")
                await store.update("agent-1/stats", "runs", lambda n: (n or 0) + 1)
                async with store.batch() as b:
                    b.put("agent-1/facts", "grass", "green")
                async with store.snapshot() as snap:
                    print(await snap.get("agent-1/facts", "sky"))
                async for batch in store.scan("agent-1/facts", batch_size=100):
                    print(len(batch))

        asyncio.run(main())

    Constructing opens the store with a few small file operations on the
    calling thread; inside a running loop, ``await AsyncStore.open(path, ...)``
    does that in a worker thread instead. Arguments are those of ``Store``,
    plus ``max_in_flight`` (default 16) and, on a ``postgresql://`` URL,
    ``server_reads``: ``"pool"`` (the default: reads over psycopg's
    ``AsyncConnection`` and ``AsyncConnectionPool`` on the loop) or
    ``"threads"`` (reads run the sync backend in the worker threads, as on
    files); docs/scale-out.md compares them. Ignored on a directory.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: str | Codec | None = None,
        durability: Durability = "fsync",
        lock_timeout_s: float = 10.0,
        shard_max_bytes: int = 32 * 1024,
        max_value_bytes: int = 16 * 1024 * 1024,
        readonly: bool = False,
        create: bool = True,
        consistency: Consistency = "cached",
        cache_ttl_s: float = 1.0,
        cache_max_entries: int = 4096,
        cache_max_bytes: int = 64 * 1024 * 1024,
        watch: WatchMode = "auto",
        poll_interval_s: float = 0.05,
        index_fields: Sequence[str] | None = None,
        embed: Embed | None = None,
        embed_id: str | None = None,
        index_on_write: bool = True,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        server_reads: Literal["threads", "pool"] | None = None,
    ) -> None:
        # Check our own arguments first: a refused one must not leave an open store behind.
        if server_reads not in (None, "threads", "pool"):
            raise InvalidValueError(f"server_reads must be 'threads' or 'pool', not {server_reads!r}")
        runner = Runner(max_in_flight)
        try:
            self._store = Store(
                path,
                codec=codec,
                durability=durability,
                lock_timeout_s=lock_timeout_s,
                shard_max_bytes=shard_max_bytes,
                max_value_bytes=max_value_bytes,
                readonly=readonly,
                create=create,
                consistency=consistency,
                cache_ttl_s=cache_ttl_s,
                cache_max_entries=cache_max_entries,
                cache_max_bytes=cache_max_bytes,
                watch=watch,
                poll_interval_s=poll_interval_s,
                index_fields=index_fields,
                embed=embed,
                embed_id=embed_id,
                index_on_write=index_on_write,
            )
        except BaseException:
            runner.stop_now()
            raise
        try:
            # Start the file-system watcher now (Store starts it on first use):
            # started later by changes(), it would walk the store's
            # directories on the loop.
            self._store._backend.warm()
        except BaseException:
            self._store.close()
            runner.stop_now()
            raise
        self._runner = runner
        self._closed = False
        self.consistency: Consistency = consistency
        # On a server store: reads over psycopg's async pool, on the loop (_pool.py).
        self._pool = PoolReads(
            self._store, max_in_flight, enabled=None if server_reads is None else server_reads == "pool"
        )

    @classmethod
    async def open(cls, path: str | os.PathLike[str], **kwargs: Any) -> AsyncStore:
        """Construct in a worker thread, so opening never blocks the loop.

        >>> store = await AsyncStore.open("./memories", durability="flush")  # doctest: +SKIP
        """
        once = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="filemem-aio-open")
        made: list[AsyncStore] = []

        def job() -> AsyncStore:
            made.append(cls(path, **kwargs))
            return made[0]

        try:
            return await finish(once, job)
        except asyncio.CancelledError:
            if made:  # opened just as the caller gave up: nobody will close it but us
                await made[0].close()
            raise
        finally:
            once.shutdown(wait=False)

    # ------------------------------------------------------------------ basics

    @property
    def sync(self) -> Store:
        """The sync Store underneath (same cache, same locks): for worker threads and ``to_thread``."""
        return self._store

    @property
    def path(self) -> str:
        """Absolute path of the store directory."""
        return self._store.path

    @property
    def backend(self) -> str:
        """Which backend holds the store: ``"file"`` or ``"postgres"``."""
        return self._store.backend

    @property
    def codec(self) -> str:
        """Name of the codec new shards are written with."""
        return self._store.codec

    @property
    def durability(self) -> Durability:
        """``"fsync"`` or ``"flush"``."""
        return self._store.durability

    @property
    def readonly(self) -> bool:
        """Whether writes are refused."""
        return self._store.readonly

    @property
    def max_in_flight(self) -> int:
        """How many calls may run at once (the rest wait, visible in stats)."""
        return self._runner.max_in_flight

    async def close(self) -> None:
        """Refuse new calls, let running ones finish, then close the store and stop every thread.

        Idempotent. Open snapshots are not waited for: close them first.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self._pool.close()
        finally:
            await self._runner.close(self._store.close)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncStore({self.path!r}, codec={self.codec!r}, max_in_flight={self.max_in_flight})"

    # ------------------------------------------------------------------ reads

    async def get(
        self, namespace: NamespaceLike, key: str, default: Any = None, *, consistency: Consistency | None = None
    ) -> Any:
        """The value at ``key``, or ``default`` (see Store.get).

        >>> await store.get("agent-1/facts", "sky", default="unknown")  # doctest: +SKIP
        'blue'
        """
        if consistency is None and not self._runner.closed:
            # A key read lately from a still-fresh cache entry: pure memory,
            # answered here (a thread round trip would cost ~100x more).
            got = self._store._get_hot(namespace, key, _DONE)
            if got is not _DONE:
                return got
        if self._pool.active and not self._runner.closed:
            got = await self._pool.get(namespace, key, default)
            if got is not NOT_HERE:
                return got
        return await self._runner.run(self._store.get, namespace, key, default, consistency=consistency)

    async def get_item(
        self, namespace: NamespaceLike, key: str, *, consistency: Consistency | None = None
    ) -> Item | None:
        """The record at ``key`` with its version and times, or None (see Store.get_item)."""
        if self._pool.active and not self._runner.closed:
            got = await self._pool.get_item(namespace, key)
            if got is not NOT_HERE:
                return got  # type: ignore[no-any-return]
        return await self._runner.run(self._store.get_item, namespace, key, consistency=consistency)

    def items(self, namespace: NamespaceLike) -> AsyncListing[Item]:
        """Every live record of a namespace, sorted by key: ``await`` it for a list, or ``async for`` it.

        The whole list is read at once (sorted, like Store.items); to stream a
        namespace of any size in bounded memory use :meth:`scan`.

        >>> async for item in store.items("agent-1/facts"):  # doctest: +SKIP
        ...     print(item.key, item.value)
        """
        return AsyncListing(lambda: self._listing("items", namespace))

    def keys(self, namespace: NamespaceLike) -> AsyncListing[str]:
        """Every live key of a namespace, sorted: ``await`` it or ``async for`` it."""
        return AsyncListing(lambda: self._listing("keys", namespace))

    async def _listing(self, what: str, namespace: NamespaceLike) -> Any:
        if self._pool.active and not self._runner.closed:
            got = await getattr(self._pool, what)(namespace)
            if got is not NOT_HERE:
                return got
        return await self._runner.run(getattr(self._store, what), namespace)

    async def list_namespaces(
        self, prefix: NamespaceLike | None = None, *, max_depth: int | None = None
    ) -> list[tuple[str, ...]]:
        """Namespaces that hold records, optionally under ``prefix`` (see Store.list_namespaces)."""
        return await self._runner.run(self._store.list_namespaces, prefix, max_depth=max_depth)

    def scan(self, namespace: NamespaceLike, batch_size: int = 100) -> AsyncIterator[list[Item]]:
        """Stream a namespace in lists of at most ``batch_size`` records, in bounded memory.

        Each list is read in a worker thread, one shard at a time (see
        Store.scan); breaking out of the loop stops the reading.

        >>> async for batch in store.scan("agent-1/episodic", batch_size=500):  # doctest: +SKIP
        ...     await index(batch)
        """
        # The sync scan checks its arguments now (no I/O), so bad input fails at the call.
        return self._drive(self._store.scan(namespace, batch_size))

    async def _drive(self, gen: Generator[list[Item], None, None]) -> AsyncIterator[list[Item]]:
        try:
            while True:
                batch = await self._runner.run(next, gen, _DONE)
                if batch is _DONE:
                    return
                yield batch
        finally:
            # Never running here (a cancelled next() ran to its end), and a
            # scan holds no lock: closing the generator is instant.
            gen.close()

    # ------------------------------------------------------------------ writes

    async def put(
        self,
        namespace: NamespaceLike,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
    ) -> int:
        """Store ``value`` at ``key``; return the record's new version (see Store.put).

        >>> await store.put("agent-1/facts", "sky", "blue", ttl=3600)  # doctest: +SKIP
        3
        """
        return await self._runner.run(self._store.put, namespace, key, value, ttl=ttl, if_version=if_version)

    async def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = None) -> bool:
        """Remove ``key``; True if it was there (see Store.delete)."""
        return await self._runner.run(self._store.delete, namespace, key, if_version=if_version)

    async def update(
        self, namespace: NamespaceLike, key: str, fn: Callable[[Any], Any], *, ttl: float | None = None
    ) -> Any:
        """Atomically replace the value with ``fn(current)``; return the new value (see Store.update).

        ``fn`` is a plain function: it runs in the worker thread, under the
        shard's exclusive lock, so it cannot await anything.

        >>> await store.update("stats", "runs", lambda n: (n or 0) + 1)  # doctest: +SKIP
        1
        """
        if inspect.iscoroutinefunction(fn):
            raise InvalidValueError("update() needs a plain function: it runs under a file lock, in a worker thread")
        return await self._runner.run(self._store.update, namespace, key, fn, ttl=ttl)

    def batch(self) -> AsyncBatch:
        """Group writes into one all-or-nothing commit: ``async with store.batch() as b``.

        >>> async with store.batch() as b:  # doctest: +SKIP
        ...     b.put("ns", "a", 1)
        ...     b.delete("ns", "b")
        """
        return AsyncBatch(self, self._store.batch())

    def snapshot(self) -> AsyncSnapshot:
        """A consistent read view: ``async with store.snapshot() as snap: await snap.get(...)``.

        Holds shared locks on what it reads until the block ends (however it
        ends, cancellation included), so keep it short.
        """
        self._store._backend.check_open()
        return AsyncSnapshot(self)

    def mapping(self, namespace: NamespaceLike) -> AsyncMappingView:
        """An async dict-like view of one namespace."""
        return AsyncMappingView(self, self._store._ns(namespace))

    # ------------------------------------------------------------------ maintenance

    async def check(self, fix: bool = False) -> list[Finding]:
        """Verify every file of the store; with ``fix=True`` repair what can be (see Store.check)."""
        return await self._runner.run(self._store.check, fix)

    async def compact(self) -> dict[str, int]:
        """Drop expired records from every shard; return counts."""
        return await self._runner.run(self._store.compact)

    async def health(self, *, lock_probe_s: float = LOCK_WINDOW_S) -> list[HealthFinding]:
        """What is worth doing to the store, most severe first (see Store.health)."""
        return await self._runner.run(self._store.health, lock_probe_s=lock_probe_s)

    async def maintain(
        self, *, budget_s: float = 30.0, dry_run: bool = False, lock_probe_s: float = LOCK_WINDOW_S
    ) -> MaintenanceReport:
        """Carry out what health() recommends, at low priority, within ``budget_s`` (see Store.maintain).

        >>> report = await astore.maintain(budget_s=5.0)  # doctest: +SKIP
        """
        return await self._runner.run(
            self._store.maintain, budget_s=budget_s, dry_run=dry_run, lock_probe_s=lock_probe_s
        )

    async def stats(self) -> dict[str, Any]:
        """Store.stats() plus ``"aio"``: in flight, waiting, queue depth (and its peak), cancellations.

        >>> (await store.stats())["aio"]["queue_depth"]  # doctest: +SKIP
        0
        """
        # In memory only, so answered on the loop: a stats call must not count itself as queued.
        return {**self._store.stats(), "aio": {**self._runner.stats(), **self._pool.stats()}}

    # ------------------------------------------------------------------ change feed

    async def subscribe(
        self,
        callback: Callable[[Change], object],
        namespace_prefix: NamespaceLike | None = None,
        *,
        max_queue: int = 1000,
    ) -> Subscription:
        """Call ``callback(change)`` for every change under ``namespace_prefix`` (see Store.subscribe).

        A plain callback runs on the subscription's own thread; an ``async def``
        callback is scheduled on the calling loop, one task per change.
        """
        return await self._runner.run_owned(
            self._store.subscribe, Subscription.close, self._on_loop(callback), namespace_prefix, max_queue=max_queue
        )

    @staticmethod
    def _on_loop(callback: Callable[[Change], object]) -> Callable[[Change], object]:
        """A plain callback as is; an ``async def`` one scheduled on the calling loop, one task per change."""
        if not inspect.iscoroutinefunction(callback):
            return callback
        loop = asyncio.get_running_loop()
        coro_fn = callback

        def on_loop(change: Change) -> None:
            coro = coro_fn(change)
            try:
                asyncio.run_coroutine_threadsafe(coro, loop)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                coro.close()

        return on_loop

    def changes(self, namespace_prefix: NamespaceLike | None = None, *, max_queue: int = 1000) -> Subscription:
        """An async iterator of changes under ``namespace_prefix`` (see Store.changes).

        >>> async for change in store.changes(("agent-1",)):  # doctest: +SKIP
        ...     print(change.namespace, change.keys)
        """
        return self._store.changes(namespace_prefix, max_queue=max_queue)

    # --- search (issue 6; the twin of Store.search, added where the search and async branches meet) ---

    async def search(
        self,
        namespace_prefix: NamespaceLike | None,
        query: str | None = None,
        filter: Mapping[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        *,
        vector: Sequence[float] | str | None = None,
    ) -> list[SearchHit]:
        """Records under ``namespace_prefix`` that match, best first (see Store.search); runs in a worker thread.

        >>> hits = await store.search(("agent-1",), query="login timeout", limit=3)  # doctest: +SKIP
        """
        return await self._runner.run(self._store.search, namespace_prefix, query, filter, limit, offset, vector=vector)

    # --- sessions (issue 7; the twins of Store.session and friends) ---

    def session(
        self,
        agent: str,
        *,
        priority: int = 0,
        metadata: dict[str, Any] | None = None,
        namespace: NamespaceLike | None = None,
        shared: Iterable[NamespaceLike] | str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        on_stop: Callable[[AsyncSession], object] | None = None,
    ) -> SessionStart:
        """Register a session every process can see (see Store.session): await it, or ``async with`` it.

        A wait for a slot runs on a thread of its own, never blocks the loop,
        and is aborted cleanly if the caller is cancelled. ``on_stop`` gets the
        AsyncSession and runs on filemem's session thread (not on the loop):
        use ``loop.call_soon_threadsafe`` from it to reach the loop.

        >>> async with store.session(agent="worker-3", priority=5) as s:  # doctest: +SKIP
        ...     await s.set_status("running", progress=0.4)
        ...     await s.store.put("worker-3", "page-1", {"ok": True})
        """
        holder: list[AsyncSession] = []

        def stop_hook(_: Any) -> None:
            if on_stop is not None and holder:
                on_stop(holder[0])

        def start() -> Any:
            return self._store.session(
                agent,
                priority=priority,
                metadata=metadata,
                namespace=namespace,
                shared=shared,
                wait=wait,
                timeout=timeout,
                on_stop=stop_hook if on_stop is not None else None,
            )

        starter = SessionStart(self, start, holder)
        return starter

    async def sessions(self, *, alive: bool | None = True) -> list[SessionInfo]:
        """Sessions of every process (see Store.sessions)."""
        return await self._runner.run(self._store.sessions, alive=alive)

    async def session_info(self, session_id: str) -> SessionInfo | None:
        """One session by id (see Store.session_info)."""
        return await self._runner.run(self._store.session_info, session_id)

    async def request_stop(self, session_id: str) -> bool:
        """Ask a live session of any process to stop (see Store.request_stop)."""
        return await self._runner.run(self._store.request_stop, session_id)

    async def limit_sessions(self, max_sessions: int | None, *, namespace: NamespaceLike | None = None) -> None:
        """Set or remove a cross-process session limit (see Store.limit_sessions)."""
        await self._runner.run(self._store.limit_sessions, max_sessions, namespace=namespace)

    async def session_limits(self) -> dict[tuple[str, ...], int]:
        """Every session limit (see Store.session_limits)."""
        return await self._runner.run(self._store.session_limits)

    async def subscribe_sessions(self, callback: Callable[[Change], object], *, max_queue: int = 1000) -> Subscription:
        """Call ``callback(change)`` when a session of any process starts, changes or ends.

        See Store.subscribe_sessions.

        An ``async def`` callback is scheduled on the calling loop.
        """
        return await self._runner.run_owned(
            self._store.subscribe_sessions, Subscription.close, self._on_loop(callback), max_queue=max_queue
        )

    def session_changes(self, *, max_queue: int = 1000) -> Subscription:
        """An async iterator of session changes (see Store.session_changes)."""
        return self._store.session_changes(max_queue=max_queue)

    # --- collector (issue 5; the twins of Store.collector and the dead-letter tools) ---

    def collector(
        self, config: CollectorConfig | str | os.PathLike[str] | None = None, **overrides: Any
    ) -> CollectorStart:
        """A fire-and-forget collector (see Store.collector): await it, or ``async with`` it.

        Creating one replays the journals of dead collectors, so it runs in a
        worker thread. Use ``await c.acollect(...)`` / ``await c.aflush()`` on
        the loop; ``async with`` drains and closes it in a worker thread.

        >>> async with store.collector(batch_size=500) as c:  # doctest: +SKIP
        ...     await c.acollect("agent-1/events", "ev-1", {"ok": True})
        ...     await c.aflush()
        """
        return CollectorStart(
            lambda: self._runner.run_owned(self._store.collector, Collector.close, config, **overrides)
        )

    async def dead_letters(self) -> list[DeadLetter]:
        """Records collectors could not apply (see Store.dead_letters)."""
        return await self._runner.run(self._store.dead_letters)

    async def replay_dead_letters(self) -> dict[str, int]:
        """Put dead letters back into the store (see Store.replay_dead_letters)."""
        return await self._runner.run(self._store.replay_dead_letters)


class CollectorStart:
    """What ``AsyncStore.collector(...)`` returns: await it for the Collector, or ``async with`` it."""

    def __init__(self, open_: Callable[[], Awaitable[Collector]]) -> None:
        self._open = open_
        self._collector: Collector | None = None

    def __await__(self) -> Generator[Any, None, Collector]:
        return self._open().__await__()

    async def __aenter__(self) -> Collector:
        self._collector = await self._open()
        return self._collector

    async def __aexit__(self, *exc: object) -> None:
        if self._collector is not None:
            await self._collector.aclose()
