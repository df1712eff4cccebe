"""The public, synchronous store (layer L5): argument checking and shaping over the engine."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from ._backends import ReadView, StoreBackend, open_backend
from ._collector import check_journals
from ._engine import Engine, Op, check_nesting, copy_value, undecoded_put
from ._errors import InvalidValueError, StoreClosedError
from ._feed import Change, Subscription
from ._freshness import Freshness, WatchMode
from ._health import HealthFacet
from ._names import normalize_namespace, validate_key
from ._search import Embed, Searcher
from ._snapshot import MappingView, Snapshot, item_of
from ._store_features import CollectorFacet, SearchScanFacet, SessionsFacet
from ._types import Consistency, Durability, Finding, Item, NamespaceLike
from .codecs import Codec

__all__ = ["Batch", "MappingView", "Snapshot", "Store"]


def _check_ttl(ttl: float | None) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
        raise InvalidValueError(f"ttl must be a positive, finite number of seconds or None, not {ttl!r}")
    return float(ttl)


def _check_version(if_version: int | None) -> int | None:
    if if_version is None:
        return None
    if isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 0:
        raise InvalidValueError(f"if_version must be a non-negative int or None, not {if_version!r}")
    return if_version


class Store(SearchScanFacet, SessionsFacet, CollectorFacet, HealthFacet):
    """A directory of memories shared safely by many processes.

    Example::

        import filemem
        with filemem.Store("./memories") as store:
            ns = ("agent-1", "episodic")
            store.put(ns, "ep-42", {"task": "login", "ok": True})
            assert store.get(ns, "ep-42")["ok"] is True
            store.update(ns, "runs", lambda n: (n or 0) + 1)   # no lost updates

    The same API runs on a PostgreSQL server (issue 16) when ``path`` is a
    ``postgresql://`` (or ``postgres://``) URL: agents on many machines then
    share one store (docs/scale-out.md says what is not supported there yet)::

        store = filemem.Store("postgresql://agent@db.internal/memories")

    Args:
        path: the store directory (created, mode 0700, if missing), or a
            ``postgresql://`` URL (the tables are created in the connection's
            current schema if missing; needs the ``postgres`` extra).
        codec: ``"json"`` (default for a new store) or ``"msgpack"``; an existing
            store keeps the codec it was created with.
        durability: ``"fsync"`` (default; a returned write survives power loss)
            or ``"flush"`` (survives a crash of the process, not of the machine).
        lock_timeout_s: how long a write waits for a lock before ``LockTimeout``.
        shard_max_bytes: a shard file is split in two when it grows past this.
        max_value_bytes: larger records are refused with ``InvalidValueError``.
        readonly: refuse every write (``ReadOnlyError``) and never change the
            store: no recovery of a dead writer's batch, no repairs. A snapshot
            still creates empty lock files, which is how shared locks are taken.
        create: create the store if missing (default); else raise.
        index_fields: dotted paths of the fields ``search`` reads text from
            (default: every string in a value).
        embed: ``text -> vector`` function; enables ``search(vector=...)``.
        embed_id: names the embedding model in the shared index (default: the
            function's qualified name); change it when the model changes.
        index_on_write: after each write, re-index the shards it wrote in
            namespaces that have a search index (default); ``False`` leaves
            that to the next search (writers then pay nothing for search).
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
    ) -> None:
        if consistency not in ("cached", "strict"):
            raise InvalidValueError(f"consistency must be 'cached' or 'strict', not {consistency!r}")
        if watch not in ("auto", "native", "polling", "off"):
            raise InvalidValueError(f"watch must be 'auto', 'native', 'polling' or 'off', not {watch!r}")
        if not cache_ttl_s >= 0 or cache_max_entries < 1 or cache_max_bytes < 0 or not poll_interval_s > 0:
            raise InvalidValueError("cache_ttl_s must be >= 0, cache sizes positive, poll_interval_s > 0")
        self.consistency: Consistency = consistency
        self._ns_cache: dict[Any, tuple[str, ...]] = {}
        # The storage: a directory (the file engine) or a postgresql:// URL
        # (issue 16). Everything below speaks to it through the backend
        # protocol (filemem/_backends/_api.py) and never asks which it is.
        self._backend: StoreBackend = open_backend(
            path,
            normalize=self._ns,
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
        # The parts the file-only features (search, scan, sessions, the
        # collector, health) run on; stand-ins that raise
        # UnsupportedFeatureError where the backend has no such part.
        self._engine: Engine = self._backend.engine
        self._fresh: Freshness = self._backend.fresh
        self._searcher: Searcher = self._backend.searcher
        if not readonly and "collector" in self._backend.features:
            self._recover_journals()

    # ------------------------------------------------------------------ basics

    @property
    def path(self) -> str:
        """Absolute path of the store directory (on a server: its URL without password, and the schema)."""
        return self._backend.location

    @property
    def backend(self) -> str:
        """Which backend holds the store: ``"file"`` or ``"postgres"``."""
        return self._backend.name

    @property
    def codec(self) -> str:
        """Name of the codec new records are written with."""
        return self._backend.codec.name

    @property
    def durability(self) -> Durability:
        """``"fsync"`` or ``"flush"``."""
        return self._backend.durability

    @property
    def readonly(self) -> bool:
        """Whether writes are refused."""
        return self._backend.readonly

    def _ns(self, namespace: NamespaceLike) -> tuple[str, ...]:
        try:
            got = self._ns_cache.get(namespace)
        except TypeError:  # a list: not hashable
            return normalize_namespace(namespace)
        if got is None:
            got = normalize_namespace(namespace)
            if len(self._ns_cache) > 4096:
                self._ns_cache.clear()
            self._ns_cache[namespace] = got
        return got

    def close(self) -> None:
        """Stop the watcher, end subscriptions, release per-process state.

        Idempotent; later calls raise StoreClosedError. Leaves no thread behind.
        """
        self._close_collectors()
        if self._session_hub is not None:
            self._session_hub.close()  # the sessions thread (issue 7)
        self._backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r}, codec={self.codec!r}, durability={self.durability!r})"

    # ------------------------------------------------------------------ reads

    def get(
        self, namespace: NamespaceLike, key: str, default: Any = None, *, consistency: Consistency | None = None
    ) -> Any:
        """The value at ``key``, or ``default``. Takes no lock (see docs/concurrency.md).

        ``consistency``: ``"cached"`` (the store's default) may answer from this
        process's cache, never older than ``cache_ttl_s`` and normally refreshed
        within milliseconds of another process's write; ``"strict"`` always
        checks the file. A process always sees its own writes at once.

        >>> store.get("agent-1/facts", "sky", default="unknown")  # doctest: +SKIP
        'blue'
        """
        return self._backend.get(namespace, key, default, consistency)

    def get_item(self, namespace: NamespaceLike, key: str, *, consistency: Consistency | None = None) -> Item | None:
        """The record at ``key`` with its version and times, or None (``consistency`` as for get)."""
        self._backend.check_open()
        ns = self._ns(namespace)
        rec = self._backend.read_record(ns, validate_key(key), consistency)
        return None if rec is None else item_of(ns, key, rec)

    def __contains__(self, ns_key: tuple[NamespaceLike, str]) -> bool:
        namespace, key = ns_key
        return self.get_item(namespace, key) is not None

    def items(self, namespace: NamespaceLike) -> list[Item]:
        """Every live record of a namespace, sorted by key (not a consistent snapshot; see snapshot())."""
        self._backend.check_open()
        ns = self._ns(namespace)
        return [item_of(ns, key, rec) for key, rec in sorted(self._backend.live(ns).items())]

    def keys(self, namespace: NamespaceLike) -> list[str]:
        """Every live key of a namespace, sorted."""
        self._backend.check_open()
        return self._backend.keys(self._ns(namespace))

    def list_namespaces(
        self, prefix: NamespaceLike | None = None, *, max_depth: int | None = None
    ) -> list[tuple[str, ...]]:
        """Namespaces that hold records, optionally under ``prefix`` (matched by whole segments).

        ``list_namespaces(prefix=("tenant", "acme"))`` never returns
        ``("tenant", "acme-corp")``. ``max_depth`` truncates longer namespaces
        to that many segments (deduplicated), like LangGraph's store; ``0``
        returns ``[]`` (no namespace has zero segments) and a negative depth
        raises InvalidValueError.
        """
        if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0):
            raise InvalidValueError(f"max_depth must be an int >= 0, not {max_depth!r}")
        self._backend.check_open()
        pre = self._ns(prefix) if prefix not in (None, (), "", []) else ()
        found = self._backend.list_namespaces(pre)
        if max_depth == 0:
            return []
        if max_depth is not None:
            found = sorted({ns[:max_depth] for ns in found})
        return found

    # ------------------------------------------------------------------ writes

    def put(
        self,
        namespace: NamespaceLike,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
    ) -> int:
        """Store ``value`` at ``key``; return the record's new version.

        ``ttl``: seconds until the record expires. ``if_version``: write only if
        the record is still at that version (0: only if absent), else raise
        ConflictError; this holds across processes.
        """
        value = copy_value(value)
        key = validate_key(key)
        encoded = self._backend.check_value(value, key)  # rides on the op: the commit does not encode again
        op = Op(
            self._ns(namespace),
            key,
            "put",
            value,
            _check_ttl(ttl),
            _check_version(if_version),
            encoded=encoded,
        )
        result: int = self._backend.apply([op])[0]
        return result

    def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = None) -> bool:
        """Remove ``key``; True if it was there. ``if_version`` as for put()."""
        op = Op(self._ns(namespace), validate_key(key), "delete", if_version=_check_version(if_version))
        result: bool = self._backend.apply([op])[0]
        return result

    def update(self, namespace: NamespaceLike, key: str, fn: Callable[[Any], Any], *, ttl: float | None = None) -> Any:
        """Atomically replace the value with ``fn(current)`` (``current`` is None if absent).

        ``fn`` runs under the shard's exclusive lock, so concurrent updates from
        any number of processes never lose one. Keep it quick; it may run more
        than once if the shard is split meanwhile, so it must not have side
        effects. Returns the new value.

        >>> store.update("stats", "runs", lambda n: (n or 0) + 1)  # doctest: +SKIP
        1
        """
        if not callable(fn):
            raise InvalidValueError("update() needs a callable")
        op = Op(self._ns(namespace), validate_key(key), "update", fn=fn, ttl=_check_ttl(ttl))
        self._backend.prepare_update(op)
        return self._backend.apply([op])[0]

    def batch(self) -> Batch:
        """Group writes into one all-or-nothing commit, even across shards and namespaces.

        >>> with store.batch() as b:  # doctest: +SKIP
        ...     b.put("ns", "a", 1)
        ...     b.delete("ns", "b")
        """
        self._backend.check_open()
        return Batch(self)

    def snapshot(self) -> ReadView:
        """A consistent read view: every read inside sees one version of the store.

        On files it holds shared locks on what it reads until it exits, so
        keep it short; on PostgreSQL it is one ``REPEATABLE READ READ ONLY``
        transaction that blocks no writer.
        """
        self._backend.check_open()
        return self._backend.snapshot()

    def mapping(self, namespace: NamespaceLike) -> MappingView:
        """A ``MutableMapping[str, Any]`` over one namespace."""
        return MappingView(self, self._ns(namespace))

    # ------------------------------------------------------------------ maintenance

    def check(self, fix: bool = False) -> list[Finding]:
        """Verify every file of the store; with ``fix=True`` repair what can be repaired.

        Returns the findings (empty: the store is clean). Safe on a live store.
        """
        self._backend.check_open()
        findings = self._backend.check(fix)
        journaled = self._backend.collector_engine
        if "collector" in self._backend.features and journaled is not self._backend.engine:
            # Journals kept apart from the engine (a server store's local
            # directory): the backend's own check never sees them.
            findings += check_journals(journaled, fix)
        if "sessions" in self._backend.features:
            findings += self._sessions().check(fix)
        return findings

    def compact(self) -> dict[str, int]:
        """Drop expired records, finish interrupted splits, merge tiny sibling shards; return counts.

        Each shard is changed under its writers' lock; busy shards are skipped
        by the merge step (see filemem/_maintain.py and docs/format.md).
        """
        self._backend.check_open()
        return self._backend.compact()

    def stats(self) -> dict[str, Any]:
        """Figures of this process's work on the store: engine counters, cache, watcher, feed.

        >>> store.stats()["cache"]["hits"]  # doctest: +SKIP
        1042
        """
        self._backend.check_open()
        return self._backend.stats()

    # ------------------------------------------------------------------ change feed

    def subscribe(
        self,
        callback: Callable[[Change], object],
        namespace_prefix: NamespaceLike | None = None,
        *,
        max_queue: int = 1000,
    ) -> Subscription:
        """Call ``callback(change)`` for every change any process makes under ``namespace_prefix``.

        Delivery runs on the subscription's own thread; a subscriber that falls
        more than ``max_queue`` changes behind receives a ``"missed"`` change
        instead of slowing anyone down. ``close()`` the subscription (or the
        store) to stop.

        >>> sub = store.subscribe(print, namespace_prefix=("agent-1",))  # doctest: +SKIP
        >>> sub.close()  # doctest: +SKIP
        """
        self._backend.check_open()
        if not callable(callback):
            raise InvalidValueError("subscribe() needs a callable")
        prefix = self._ns(namespace_prefix) if namespace_prefix not in (None, (), "", []) else ()
        return self._backend.subscribe(callback, prefix, max(1, max_queue))

    def changes(self, namespace_prefix: NamespaceLike | None = None, *, max_queue: int = 1000) -> Subscription:
        """An async iterator of changes under ``namespace_prefix`` (call it inside a running loop).

        >>> async for change in store.changes(("agent-1",)):  # doctest: +SKIP
        ...     print(change.namespace, change.keys)
        """
        self._backend.check_open()
        prefix = self._ns(namespace_prefix) if namespace_prefix not in (None, (), "", []) else ()
        return self._backend.subscribe_async(prefix, max(1, max_queue))

    def _get_hot(self, namespace: NamespaceLike, key: str, missing: Any) -> Any:
        """The value from get()'s hot path, or ``missing`` when only the full path can answer.

        Pure memory, no system call: the async twin answers such a get on the
        loop instead of paying a round trip to a worker thread. Keep in step
        with the hot path at the top of get() (inlined there for speed).
        """
        return self._backend.get_hot(namespace, key, missing)


#: A plain put queued by :meth:`Batch.put`: namespace, key, codec name, the value's bytes in that codec.
_PlainPut = tuple[tuple[str, ...], str, str, bytes]


def _as_op(op: Op | _PlainPut) -> Op:
    """A queued write as an Op (a plain put: its bytes alone, ``UNDECODED``; the engine decodes where needed)."""
    if isinstance(op, Op):
        return op
    return undecoded_put(*op)


class Batch:
    """Writes collected and committed together by :meth:`Store.batch`.

    On a clean exit of the ``with`` block the writes are committed all or
    nothing; on an exception nothing is written. ``results`` then holds one
    result per operation (as put/delete/update return).

    A put's value is checked and encoded when it is queued: a value that
    cannot be stored is refused then, and changing it afterwards changes
    nothing that is written.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        #: An Op, or a plain put as (namespace, key, codec, bytes) where the backend takes bytes alone.
        self._ops: list[Op | _PlainPut] = []
        self._done = False
        self.results: list[Any] = []
        # A file store with a log (format 2) logs plain puts as their codec bytes
        # (Engine.apply_puts, the collector's path): a queued put then keeps no copy of its value and
        # no Op, which a 1,000-record batch spent about 2 us per record on,
        # half of it the garbage collector walking them (issue 13).
        backend = store._backend
        self._apply_puts: Callable[[list[_PlainPut]], list[Any]] | None = (
            getattr(backend, "apply_puts", None) if getattr(backend, "logs_puts", False) else None
        )

    @property
    def done(self) -> bool:
        """Whether the batch was committed or abandoned (it takes no more operations then)."""
        return self._done

    def _add(self, op: Op | _PlainPut) -> Batch:
        if self._done:
            raise StoreClosedError("batch already committed or abandoned")
        self._ops.append(op)
        return self

    def put(
        self,
        namespace: NamespaceLike,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
    ) -> Batch:
        """Queue a put (see Store.put)."""
        s = self._store
        if ttl is None and if_version is None and self._apply_puts is not None:
            check_nesting(value)  # what copy_value refuses, without the copy
            key = validate_key(key)
            got = s._backend.check_value(value, key)
            if got is not None:
                # An exact copy of the bytes: orjson's output object holds a
                # ~4 KB allocation however short the JSON, and the log's overlay
                # keeps these until the fold (see _decide's plain branch).
                return self._add((s._ns(namespace), key, got[0], bytes(memoryview(got[1]))))
            return self._add(Op(s._ns(namespace), key, "put", copy_value(value)))
        value = copy_value(value)
        key = validate_key(key)
        # The check encodes the value; the commit reuses those bytes rather than encoding it again.
        encoded = s._backend.check_value(value, key)
        return self._add(
            Op(
                s._ns(namespace),
                key,
                "put",
                value,
                _check_ttl(ttl),
                _check_version(if_version),
                encoded=encoded,
            )
        )

    def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = None) -> Batch:
        """Queue a delete (see Store.delete)."""
        s = self._store
        return self._add(Op(s._ns(namespace), validate_key(key), "delete", if_version=_check_version(if_version)))

    def update(
        self, namespace: NamespaceLike, key: str, fn: Callable[[Any], Any], *, ttl: float | None = None
    ) -> Batch:
        """Queue an atomic read-modify-write (see Store.update)."""
        if not callable(fn):
            raise InvalidValueError("update() needs a callable")
        s = self._store
        return self._add(Op(s._ns(namespace), validate_key(key), "update", fn=fn, ttl=_check_ttl(ttl)))

    def __len__(self) -> int:
        return len(self._ops)

    def commit(self) -> list[Any]:
        """Commit now (the ``with`` block does this for you)."""
        if self._done:
            raise StoreClosedError("batch already committed or abandoned")
        self._done = True
        ops = self._ops
        if not ops:
            self.results = []
        elif self._apply_puts is not None and all(type(op) is tuple for op in ops):
            self.results = self._apply_puts(ops)  # type: ignore[arg-type]  # all plain puts
        else:
            self.results = self._store._backend.apply([_as_op(op) for op in ops])
        return self.results

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            if not self._done:
                self.commit()
        else:
            self._done = True
