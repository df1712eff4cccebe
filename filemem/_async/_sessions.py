"""The async faces of a session and of its confined store (layer L5).

A session's lock is a file lock held by the process, not by a thread, so a
session started in a worker thread is the caller's session whatever thread
later updates or closes it. Starting may wait for a slot (``max_sessions``)
for a long time: that wait runs on a thread reserved for it, never in the
store's shared pool, so waiting sessions cannot starve ordinary calls; a
cancelled start aborts the wait and leaves no record, ticket or slot behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from .._sessions import Session, SessionInfo, SessionStore
from .._store import Batch
from .._types import Consistency, Item, NamespaceLike
from ._runner import finish
from ._views import AsyncBatch

if TYPE_CHECKING:
    from ._store import AsyncStore

__all__ = ["AsyncSession", "AsyncSessionStore", "SessionStart"]


class AsyncSessionStore:
    """A session's confined view of the store, as coroutines (see Session.store).

    >>> async with astore.session(agent="w", namespace="w") as s:  # doctest: +SKIP
    ...     await s.store.put("w", "k", 1)
    """

    def __init__(self, astore: AsyncStore, inner: SessionStore) -> None:
        self._astore = astore
        self._inner = inner

    async def get(
        self, namespace: NamespaceLike, key: str, default: Any = None, *, consistency: Consistency | None = None
    ) -> Any:
        """Read one value (read access needed)."""
        return await self._astore._runner.run(self._inner.get, namespace, key, default, consistency=consistency)

    async def get_item(
        self, namespace: NamespaceLike, key: str, *, consistency: Consistency | None = None
    ) -> Item | None:
        """Read one record with its metadata (read access needed)."""
        return await self._astore._runner.run(self._inner.get_item, namespace, key, consistency=consistency)

    async def keys(self, namespace: NamespaceLike) -> list[str]:
        """Live keys of a namespace (read access needed)."""
        return await self._astore._runner.run(self._inner.keys, namespace)

    async def items(self, namespace: NamespaceLike) -> list[Item]:
        """Live records of a namespace (read access needed)."""
        return await self._astore._runner.run(self._inner.items, namespace)

    async def list_namespaces(
        self, prefix: NamespaceLike | None = None, *, max_depth: int | None = None
    ) -> list[tuple[str, ...]]:
        """Namespaces this session may read."""
        return await self._astore._runner.run(self._inner.list_namespaces, prefix, max_depth=max_depth)

    async def put(
        self,
        namespace: NamespaceLike,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
    ) -> int:
        """Write one value (write access needed)."""
        return await self._astore._runner.run(self._inner.put, namespace, key, value, ttl=ttl, if_version=if_version)

    async def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = None) -> bool:
        """Delete one key (write access needed)."""
        return await self._astore._runner.run(self._inner.delete, namespace, key, if_version=if_version)

    async def update(
        self, namespace: NamespaceLike, key: str, fn: Callable[[Any], Any], *, ttl: float | None = None
    ) -> Any:
        """Atomic read-modify-write of one key (write access needed)."""
        return await self._astore._runner.run(self._inner.update, namespace, key, fn, ttl=ttl)

    def batch(self) -> AsyncBatch:
        """An all-or-nothing batch, checked against the session's rules as ops are queued."""
        # SessionBatch has the Batch surface AsyncBatch drives (put/delete/update/commit/results).
        return AsyncBatch(self._astore, cast(Batch, self._inner.batch()))


class AsyncSession:
    """A running session, driven from asyncio (see Store.session).

    In-memory figures (``id``, ``agent``, ``closed``, ``operations``,
    ``bytes_written``) are plain properties; anything that touches files is a
    coroutine.
    """

    def __init__(self, astore: AsyncStore, session: Session) -> None:
        self._astore = astore
        self._session = session
        self._store = AsyncSessionStore(astore, session.store)

    @property
    def id(self) -> str:
        """The session id."""
        return self._session.id

    @property
    def agent(self) -> str:
        """The agent name given at start."""
        return self._session.agent

    @property
    def closed(self) -> bool:
        """Whether ``close()`` ran."""
        return self._session.closed

    @property
    def operations(self) -> int:
        """Calls made through ``store`` so far."""
        return self._session.operations

    @property
    def bytes_written(self) -> int:
        """Encoded bytes written through ``store`` so far."""
        return self._session.bytes_written

    @property
    def store(self) -> AsyncSessionStore:
        """The session's confined view of the store, as coroutines."""
        return self._store

    @property
    def sync(self) -> Session:
        """The underlying sync Session (its calls block: use them off the loop)."""
        return self._session

    async def stop_requested(self) -> bool:
        """Whether another process asked this session to stop (one ``stat``)."""
        return await self._astore._runner.run(lambda: self._session.stop_requested)

    async def info(self) -> SessionInfo:
        """The session as other processes see it now."""
        return await self._astore._runner.run(self._session.info)

    async def set_status(self, status: str, progress: float | None = None) -> None:
        """Record what the session is doing (an atomic rewrite of its record)."""
        await self._astore._runner.run(self._session.set_status, status, progress)

    async def close(self) -> None:
        """End the session; never withdrawn, even when the caller is cancelled."""
        if self._session.closed:
            return
        await finish(self._astore._runner.pool, self._session.close, withdraw=False)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r}, agent={self.agent!r}, closed={self.closed})"


class SessionStart:
    """What ``AsyncStore.session(...)`` returns: await it, or use it with ``async with``.

    >>> s = await astore.session(agent="w")                  # doctest: +SKIP
    >>> async with astore.session(agent="w") as s:           # doctest: +SKIP
    ...     await s.set_status("running", progress=0.5)
    """

    def __init__(self, astore: AsyncStore, start: Callable[[], Session], holder: list[AsyncSession]) -> None:
        self._astore = astore
        self._start = start
        self._holder = holder  # where the on_stop hook finds the AsyncSession
        self._session: AsyncSession | None = None

    async def _open(self) -> AsyncSession:
        runner = self._astore._runner
        got: list[Session] = []

        def job() -> Session:
            s = self._start()
            got.append(s)  # seen by the cancelled path below, which must close it
            return s

        pool = runner.snapshot_pool()
        try:
            session = await finish(pool, job)
        except asyncio.CancelledError:
            # The start may have completed just as we were cancelled: a session
            # nobody will ever close must not hold a slot.
            if got:
                await finish(pool, got[0].close, withdraw=False)
            raise
        finally:
            runner.return_snapshot_pool(pool)
        wrapped = AsyncSession(self._astore, session)
        self._holder.append(wrapped)
        return wrapped

    def __await__(self) -> Generator[Any, None, AsyncSession]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncSession:
        self._session = await self._open()
        return self._session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
