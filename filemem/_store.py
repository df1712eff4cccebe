"""The public, synchronous store (layer L5): argument checking and shaping over the engine."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from ._cache import ShardCache
from ._check import check_store, compact_store
from ._engine import Engine, Op, _fork_generation, copy_value
from ._errors import InvalidValueError, StoreClosedError
from ._feed import Change, Subscription
from ._freshness import Freshness, WatchMode
from ._health import HealthFacet
from ._names import normalize_namespace, validate_key
from ._search import Embed, Searcher
from ._sessions import check_sessions
from ._shard import Record
from ._snapshot import MappingView, Snapshot, item_of
from ._store_features import CollectorFacet, SearchScanFacet, SessionsFacet
from ._types import Consistency, Durability, Finding, Item, NamespaceLike
from .codecs import Codec

__all__ = ["Batch", "MappingView", "Snapshot", "Store"]

#: Most keys the hot-path table remembers before it starts over.
_HOT_MAX = 16384


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

    Args:
        path: the store directory (created, mode 0700, if missing).
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
        cache = ShardCache(ttl_s=cache_ttl_s, max_entries=cache_max_entries, max_bytes=cache_max_bytes)
        self._engine = Engine(
            os.fspath(path),
            codec=codec,
            durability=durability,
            lock_timeout_s=lock_timeout_s,
            shard_max_bytes=shard_max_bytes,
            max_value_bytes=max_value_bytes,
            readonly=readonly,
            create=create,
            cache=cache,
        )
        self._fresh = Freshness(self._engine, cache, watch=watch, poll_interval_s=poll_interval_s)
        # (namespace as given, key) -> (cache entry, record) for recent cached gets.
        self._hot: dict[tuple[Any, str], tuple[Any, Record]] = {}
        self._hot_epoch = cache.epoch
        self._hot_fork = _fork_generation[0]
        self._hot_hits = 0
        self._hot_on = consistency == "cached"
        self._ns_cache: dict[Any, tuple[str, ...]] = {}
        self._searcher = Searcher(self._engine, index_fields=index_fields, embed=embed, embed_id=embed_id)
        if index_on_write:
            self._engine.after_apply = self._searcher.note_write
        if not readonly:
            # Best effort: an intent that cannot be finished now fails only
            # the writes to the namespaces it names (see recover_batches).
            self._engine.recover_batches(())
            self._recover_journals()

    # ------------------------------------------------------------------ basics

    @property
    def path(self) -> str:
        """Absolute path of the store directory."""
        return self._engine.root

    @property
    def codec(self) -> str:
        """Name of the codec new shards are written with."""
        return self._engine.codec.name

    @property
    def durability(self) -> Durability:
        """``"fsync"`` or ``"flush"``."""
        return self._engine.durability

    @property
    def readonly(self) -> bool:
        """Whether writes are refused."""
        return self._engine.readonly

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
        self._hot_on = False
        self._hot = {}
        if not self._engine.closed:
            self._searcher.flush()
        self._close_collectors()
        self._fresh.close()
        if self._session_hub is not None:
            self._session_hub.close()  # the sessions thread (issue 7)
        self._engine.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r}, codec={self.codec!r}, durability={self.durability!r})"

    # ------------------------------------------------------------------ reads

    def _fresh_ok(self, consistency: Consistency | None) -> bool:
        level = consistency or self.consistency
        if level == "cached":
            self._fresh.ensure_watching()
            return True
        if level != "strict":
            raise InvalidValueError(f"consistency must be 'cached' or 'strict', not {level!r}")
        return False

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
        if consistency is None and self._hot_on:
            # The hot path: a key this process read lately, from a cache entry
            # that is still fresh. No validation (it passed before), no system
            # call, no hashing: one dict lookup and a clock read.
            try:
                hot = self._hot.get((namespace, key))
            except TypeError:  # an unhashable namespace (a list)
                hot = None
            if (
                hot is not None
                and hot[0].fresh_until > time.monotonic()
                and self._hot_epoch == self._fresh.cache.epoch
                and self._hot_fork == _fork_generation[0]  # a forked child takes the full path first
                and not self._engine.changed()  # another write committed: it may be this key's
            ):
                hot_rec = hot[1]
                x = hot_rec.get("expires_at")
                if x is None or x > time.time():
                    hot[0].used = True
                    self._hot_hits += 1
                    return copy_value(hot_rec["value"])
        self._engine.check_open()
        fresh_ok = self._fresh_ok(consistency)
        rec, entry = self._engine.read_entry(self._ns(namespace), validate_key(key), fresh_ok=fresh_ok)
        if entry is not None and consistency is None:
            cache = self._fresh.cache
            if self._hot_epoch != cache.epoch or len(self._hot) >= _HOT_MAX or self._hot_fork != _fork_generation[0]:
                # Entries left the cache: drop our references to them so
                # evicted shards can be freed.
                self._hot = {}
                self._hot_epoch = cache.epoch
                self._hot_fork = _fork_generation[0]
            assert rec is not None
            with contextlib.suppress(TypeError):  # an unhashable namespace
                self._hot[(namespace, key)] = (entry, rec)
        return default if rec is None else copy_value(rec["value"])

    def get_item(self, namespace: NamespaceLike, key: str, *, consistency: Consistency | None = None) -> Item | None:
        """The record at ``key`` with its version and times, or None (``consistency`` as for get)."""
        self._engine.check_open()
        ns = self._ns(namespace)
        rec = self._engine.read(ns, validate_key(key), fresh_ok=self._fresh_ok(consistency))
        return None if rec is None else item_of(ns, key, rec)

    def __contains__(self, ns_key: tuple[NamespaceLike, str]) -> bool:
        namespace, key = ns_key
        return self.get_item(namespace, key) is not None

    def items(self, namespace: NamespaceLike) -> list[Item]:
        """Every live record of a namespace, sorted by key (not a consistent snapshot; see snapshot())."""
        self._engine.check_open()
        ns = self._ns(namespace)
        return [item_of(ns, key, rec) for key, rec in sorted(self._live(ns).items())]

    def _live(self, ns: tuple[str, ...]) -> dict[str, Record]:
        now = time.time()
        out: dict[str, Record] = {}
        for _, shard, own in self._engine.iter_shards(ns):
            for key, rec in shard.records.items():
                x = rec.get("expires_at")
                if (x is None or x > now) and own(key):
                    # A split racing the listing can show a key twice: keep the newer.
                    seen = out.get(key)
                    if seen is None or seen["version"] < rec["version"]:
                        out[key] = rec
        # Records the log holds that the shards may not yet: the newer wins.
        for key, (version, logged) in self._engine.unfolded(ns).items():
            seen = out.get(key)
            if seen is not None and seen["version"] >= version:
                continue
            if logged is None or ((x := logged.get("expires_at")) is not None and x <= now):
                out.pop(key, None)
            else:
                out[key] = logged
        return out

    def keys(self, namespace: NamespaceLike) -> list[str]:
        """Every live key of a namespace, sorted."""
        self._engine.check_open()
        return sorted(self._live(self._ns(namespace)))

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
        self._engine.check_open()
        pre = self._ns(prefix) if prefix not in (None, (), "", []) else ()
        found = self._engine.list_namespaces(pre)
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
        self._engine.check_value(value, key)
        op = Op(
            self._ns(namespace),
            key,
            "put",
            value,
            _check_ttl(ttl),
            _check_version(if_version),
        )
        result: int = self._engine.apply([op])[0]
        return result

    def delete(self, namespace: NamespaceLike, key: str, *, if_version: int | None = None) -> bool:
        """Remove ``key``; True if it was there. ``if_version`` as for put()."""
        op = Op(self._ns(namespace), validate_key(key), "delete", if_version=_check_version(if_version))
        result: bool = self._engine.apply([op])[0]
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
        if not self._engine.view(op.namespace).dir_known and not self._engine.namespace_exists(op.namespace):
            # A new namespace: the record is absent, so fn(None) is what the
            # commit will store unless another process gets there first (then
            # fn runs again, which its contract allows). Refuse a value that
            # cannot be stored before the directory and lock file exist.
            try:
                guess = copy_value(fn(None))
            except Exception:
                guess = None
            self._engine.check_value(guess, op.key)
        return self._engine.apply([op])[0]

    def batch(self) -> Batch:
        """Group writes into one all-or-nothing commit, even across shards and namespaces.

        >>> with store.batch() as b:  # doctest: +SKIP
        ...     b.put("ns", "a", 1)
        ...     b.delete("ns", "b")
        """
        self._engine.check_open()
        return Batch(self)

    def snapshot(self) -> Snapshot:
        """A consistent read view: every read inside sees one version of the store.

        Holds shared locks on what it reads until it exits, so keep it short.
        """
        self._engine.check_open()
        return Snapshot(self._engine, self._ns)

    def mapping(self, namespace: NamespaceLike) -> MappingView:
        """A ``MutableMapping[str, Any]`` over one namespace."""
        return MappingView(self, self._ns(namespace))

    # ------------------------------------------------------------------ maintenance

    def check(self, fix: bool = False) -> list[Finding]:
        """Verify every file of the store; with ``fix=True`` repair what can be repaired.

        Returns the findings (empty: the store is clean). Safe on a live store.
        """
        self._engine.check_open()
        return check_store(self._engine, fix=fix) + check_sessions(self._sessions().registry, fix=fix)

    def compact(self) -> dict[str, int]:
        """Drop expired records, finish interrupted splits, merge tiny sibling shards; return counts.

        Each shard is changed under its writers' lock; busy shards are skipped
        by the merge step (see filemem/_maintain.py and docs/format.md).
        """
        self._engine.check_open()
        return compact_store(self._engine)

    def stats(self) -> dict[str, Any]:
        """Figures of this process's work on the store: engine counters, cache, watcher, feed.

        >>> store.stats()["cache"]["hits"]  # doctest: +SKIP
        1042
        """
        self._engine.check_open()
        fresh = self._fresh.stats()
        fresh["cache"]["hits"] += self._hot_hits  # reads answered by the hot-key table
        return {
            "path": self.path,
            "codec": self.codec,
            "durability": self.durability,
            "consistency": self.consistency,
            **self._engine.counters,
            **fresh,
        }

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
        self._engine.check_open()
        if not callable(callback):
            raise InvalidValueError("subscribe() needs a callable")
        prefix = self._ns(namespace_prefix) if namespace_prefix not in (None, (), "", []) else ()
        sub = self._fresh.feed.subscribe(callback, prefix, max(1, max_queue))
        self._fresh.ensure_watching()
        return sub

    def changes(self, namespace_prefix: NamespaceLike | None = None, *, max_queue: int = 1000) -> Subscription:
        """An async iterator of changes under ``namespace_prefix`` (call it inside a running loop).

        >>> async for change in store.changes(("agent-1",)):  # doctest: +SKIP
        ...     print(change.namespace, change.keys)
        """
        self._engine.check_open()
        prefix = self._ns(namespace_prefix) if namespace_prefix not in (None, (), "", []) else ()
        sub = self._fresh.feed.subscribe_async(prefix, max(1, max_queue))
        self._fresh.ensure_watching()
        return sub

    def _get_hot(self, namespace: NamespaceLike, key: str, missing: Any) -> Any:
        """The value from get()'s hot path, or ``missing`` when only the full path can answer.

        Pure memory, no system call: the async twin answers such a get on the
        loop instead of paying a round trip to a worker thread. Keep in step
        with the hot path at the top of get() (inlined there for speed).
        """
        if not self._hot_on:
            return missing
        try:
            hot = self._hot.get((namespace, key))
        except TypeError:  # an unhashable namespace (a list)
            return missing
        if (
            hot is None
            or hot[0].fresh_until <= time.monotonic()
            or self._hot_epoch != self._fresh.cache.epoch
            or self._hot_fork != _fork_generation[0]
            or self._engine.changed()  # another write committed: it may be this key's
        ):
            return missing
        rec = hot[1]
        x = rec.get("expires_at")
        if x is not None and x <= time.time():
            return missing
        hot[0].used = True
        self._hot_hits += 1
        return copy_value(rec["value"])


class Batch:
    """Writes collected and committed together by :meth:`Store.batch`.

    On a clean exit of the ``with`` block the writes are committed all or
    nothing; on an exception nothing is written. ``results`` then holds one
    result per operation (as put/delete/update return).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ops: list[Op] = []
        self._done = False
        self.results: list[Any] = []

    @property
    def done(self) -> bool:
        """Whether the batch was committed or abandoned (it takes no more operations then)."""
        return self._done

    def _add(self, op: Op) -> Batch:
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
        value = copy_value(value)
        s._engine.check_value(value, validate_key(key))
        return self._add(
            Op(
                s._ns(namespace),
                validate_key(key),
                "put",
                value,
                _check_ttl(ttl),
                _check_version(if_version),
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
        self.results = self._store._engine.apply(self._ops) if self._ops else []
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
