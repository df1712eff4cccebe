"""Confinement: a session's view of the store, limited to its namespaces (layer L4).

A confined session reads and writes under its own namespace and only reads
under its shared ones; anything else raises :class:`SessionPermissionError`
before the store is touched. This layer sits below ``_store``, so the facade
wraps any object with the Store's method shapes (the ``StoreLike`` Protocol)
and never imports the Store itself.

This guards against *mistakes* between cooperating agents (a worker writing
into its neighbour's namespace), not against a hostile process: anyone who
can open the store directory can open the files.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from .._errors import SessionPermissionError
from .._names import normalize_namespace
from .._types import Consistency, Item, NamespaceLike

__all__ = ["BatchLike", "SessionStore", "StoreLike"]


class BatchLike(Protocol):
    """What the facade needs of a Store's batch."""

    results: list[Any]

    def put(
        self, namespace: NamespaceLike, key: str, value: Any, *, ttl: float | None = ..., if_version: int | None = ...
    ) -> Any: ...
    def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = ...) -> Any: ...
    def update(
        self, namespace: NamespaceLike, key: str, fn: Callable[[Any], Any], *, ttl: float | None = ...
    ) -> Any: ...
    def commit(self) -> list[Any]: ...
    def __len__(self) -> int: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class StoreLike(Protocol):
    """What the facade needs of a Store (``filemem.Store`` has this shape)."""

    def get(
        self, namespace: NamespaceLike, key: str, default: Any = ..., *, consistency: Consistency | None = ...
    ) -> Any: ...
    def get_item(self, namespace: NamespaceLike, key: str, *, consistency: Consistency | None = ...) -> Item | None: ...
    def keys(self, namespace: NamespaceLike) -> list[str]: ...
    def items(self, namespace: NamespaceLike) -> list[Item]: ...
    def list_namespaces(
        self, prefix: NamespaceLike | None = ..., *, max_depth: int | None = ...
    ) -> list[tuple[str, ...]]: ...
    def put(
        self, namespace: NamespaceLike, key: str, value: Any, *, ttl: float | None = ..., if_version: int | None = ...
    ) -> int: ...
    def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = ...) -> bool: ...
    def update(
        self, namespace: NamespaceLike, key: str, fn: Callable[[Any], Any], *, ttl: float | None = ...
    ) -> Any: ...
    def batch(self) -> BatchLike: ...


#: Called after each operation with (written bytes); the session counts them.
Counter = Callable[[int], None]


def _under(ns: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    return ns[: len(prefix)] == prefix


class _Rules:
    """Which namespaces a session may read and write."""

    def __init__(self, session_id: str, own: tuple[str, ...] | None, shared: tuple[tuple[str, ...], ...]) -> None:
        self.session_id = session_id
        self.own = own
        self.shared = shared

    def readable(self, ns: tuple[str, ...]) -> bool:
        return self.own is None or _under(ns, self.own) or any(_under(ns, s) for s in self.shared)

    def check(self, operation: str, namespace: NamespaceLike, *, write: bool) -> tuple[str, ...]:
        ns = normalize_namespace(namespace)
        if self.own is None:
            return ns
        if write:
            if _under(ns, self.own):
                return ns
            why = "read-only for this session" if self.readable(ns) else "outside this session's namespaces"
        elif self.readable(ns):
            return ns
        else:
            why = "outside this session's namespaces"
        raise SessionPermissionError(
            f"session {self.session_id} may not {operation} in namespace {'/'.join(ns)!r}: {why} "
            f"(read-write: {'/'.join(self.own)!r}; read-only: {[('/'.join(s)) for s in self.shared]})",
            operation=operation,
            namespace=ns,
            session_id=self.session_id,
        )


class SessionStore:
    """A session's view of its store: the Store's read and write methods, confined and counted.

    Get it as ``session.store``. Each call is checked against the session's
    namespaces (read-write under ``namespace``, read-only under ``shared``;
    everything when the session is not confined) and raises
    :class:`~filemem.SessionPermissionError` before touching the store
    otherwise. Calls count toward the session's ``operations`` and
    ``bytes_written``.

    Example::

        with store.session("worker-3", namespace="worker-3", shared=["docs"]) as s:
            s.store.put("worker-3", "result", {"ok": True})   # allowed
            s.store.get("docs", "howto")                      # allowed (read-only)
            s.store.put("docs", "howto", "x")                 # SessionPermissionError
    """

    def __init__(
        self,
        store: StoreLike,
        rules: _Rules,
        count: Counter,
        size_of: Callable[[Any], int],
        guard: Callable[[], None],
    ) -> None:
        self._store = store
        self._rules = rules
        self._count = count
        self._size_of = size_of
        #: Raises once the session is closed (or in a forked child): the facade dies with its session.
        self._guard = guard

    def get(
        self, namespace: NamespaceLike, key: str, default: Any = None, *, consistency: Consistency | None = None
    ) -> Any:
        """As :meth:`filemem.Store.get`, inside the session's readable namespaces."""
        self._guard()
        ns = self._rules.check("get", namespace, write=False)
        out = self._store.get(ns, key, default, consistency=consistency)
        self._count(0)
        return out

    def get_item(self, namespace: NamespaceLike, key: str, *, consistency: Consistency | None = None) -> Item | None:
        """As :meth:`filemem.Store.get_item`, inside the session's readable namespaces."""
        self._guard()
        ns = self._rules.check("get_item", namespace, write=False)
        out = self._store.get_item(ns, key, consistency=consistency)
        self._count(0)
        return out

    def keys(self, namespace: NamespaceLike) -> list[str]:
        """As :meth:`filemem.Store.keys`, inside the session's readable namespaces."""
        self._guard()
        out = self._store.keys(self._rules.check("keys", namespace, write=False))
        self._count(0)
        return out

    def items(self, namespace: NamespaceLike) -> list[Item]:
        """As :meth:`filemem.Store.items`, inside the session's readable namespaces."""
        self._guard()
        out = self._store.items(self._rules.check("items", namespace, write=False))
        self._count(0)
        return out

    def list_namespaces(
        self, prefix: NamespaceLike | None = None, *, max_depth: int | None = None
    ) -> list[tuple[str, ...]]:
        """As :meth:`filemem.Store.list_namespaces`, showing only namespaces this session may read."""
        self._guard()
        found = self._store.list_namespaces(prefix, max_depth=max_depth)
        self._count(0)
        return [ns for ns in found if self._rules.readable(ns)]

    def put(
        self,
        namespace: NamespaceLike,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
    ) -> int:
        """As :meth:`filemem.Store.put`, inside the session's own namespace."""
        self._guard()
        ns = self._rules.check("put", namespace, write=True)
        version = self._store.put(ns, key, value, ttl=ttl, if_version=if_version)
        self._count(self._size_of(value))
        return version

    def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = None) -> bool:
        """As :meth:`filemem.Store.delete`, inside the session's own namespace."""
        self._guard()
        ns = self._rules.check("delete", namespace, write=True)
        out = self._store.delete(ns, key, if_version=if_version)
        self._count(0)
        return out

    def update(self, namespace: NamespaceLike, key: str, fn: Callable[[Any], Any], *, ttl: float | None = None) -> Any:
        """As :meth:`filemem.Store.update`, inside the session's own namespace."""
        self._guard()
        ns = self._rules.check("update", namespace, write=True)
        out = self._store.update(ns, key, fn, ttl=ttl)
        self._count(self._size_of(out))
        return out

    def batch(self) -> SessionBatch:
        """As :meth:`filemem.Store.batch`; every queued write is checked when it is queued."""
        self._guard()
        return SessionBatch(self._store.batch(), self._rules, self._count, self._size_of, self._guard)


class SessionBatch:
    """A confined :class:`filemem.Batch`: refuses a write outside the session's namespace as it is queued."""

    def __init__(
        self,
        batch: BatchLike,
        rules: _Rules,
        count: Counter,
        size_of: Callable[[Any], int],
        guard: Callable[[], None],
    ) -> None:
        self._guard = guard
        self._batch = batch
        self._rules = rules
        self._count = count
        self._size_of = size_of
        self._bytes = 0
        self._committed = False

    @property
    def results(self) -> list[Any]:
        """One result per operation, after commit."""
        return self._batch.results

    def put(
        self,
        namespace: NamespaceLike,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
    ) -> SessionBatch:
        """Queue a put (see Store.put)."""
        self._batch.put(self._rules.check("put", namespace, write=True), key, value, ttl=ttl, if_version=if_version)
        self._bytes += self._size_of(value)
        return self

    def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = None) -> SessionBatch:
        """Queue a delete (see Store.delete)."""
        self._batch.delete(self._rules.check("delete", namespace, write=True), key, if_version=if_version)
        return self

    def update(
        self, namespace: NamespaceLike, key: str, fn: Callable[[Any], Any], *, ttl: float | None = None
    ) -> SessionBatch:
        """Queue an atomic read-modify-write (see Store.update)."""
        self._batch.update(self._rules.check("update", namespace, write=True), key, fn, ttl=ttl)
        return self

    def __len__(self) -> int:
        return len(self._batch)

    @property
    def done(self) -> bool:
        """Whether the batch was committed or abandoned."""
        return self._committed

    def commit(self) -> list[Any]:
        """Commit now (the ``with`` block does this for you)."""
        self._guard()
        self._committed = True
        out = self._batch.commit()
        self._count(self._bytes)
        return out

    def __enter__(self) -> SessionBatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            if not self._committed:
                self.commit()
        else:
            self._committed = True
            self._batch.__exit__(exc_type, exc, tb)  # abandons it: nothing is written
