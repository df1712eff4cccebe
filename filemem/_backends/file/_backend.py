"""The file backend: the file engine, its cache, watcher and search index behind the backend protocol (issue 16).

Invariant: this is the code ``Store`` ran itself before the seam, moved, not
changed: the same engine calls in the same order, the same hot-key table in
front of cached gets (a cached get still costs no system call), the same
freshness machinery. ``Store`` keeps the argument checking; this object owns
what is file-shaped.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, Final

from ... import _fs
from ..._cache import ShardCache
from ..._check import check_store, compact_store
from ..._engine import Engine, Op, _fork_generation, copier, copy_value, undecoded_put
from ..._errors import InvalidValueError
from ..._feed import Change, Subscription
from ..._freshness import Freshness, WatchMode
from ..._names import validate_key
from ..._search import Embed, Searcher, SearchHit
from ..._sessions import SessionHub
from ..._shard import Record, Shard, decode_shard
from ..._snapshot import Snapshot, item_of
from ..._types import Consistency, Durability, Finding, Item, NamespaceLike
from ...codecs import Codec

__all__ = ["FileBackend"]

#: Most keys the hot-path table remembers before it starts over.
_HOT_MAX: Final = 16384

#: A hot-key table entry: the shard cache entry the record came from (its
#: ``fresh_until``), the record, the commit counter and overlay generation
#: read before the record was, and the cheapest copy of its value.
_Hot = tuple[Any, Record, int, int, Callable[[Any], Any]]


class FileBackend:
    """A store directory on local disks, shared by the processes of one machine."""

    name: Final = "file"
    features: frozenset[str] = frozenset({"search", "scan", "sessions", "collector", "health"})

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        normalize: Callable[[Any], tuple[str, ...]],
        codec: str | Codec | None,
        durability: Durability,
        lock_timeout_s: float,
        shard_max_bytes: int,
        max_value_bytes: int,
        readonly: bool,
        create: bool,
        consistency: Consistency,
        cache_ttl_s: float,
        cache_max_entries: int,
        cache_max_bytes: int,
        watch: WatchMode,
        poll_interval_s: float,
        index_fields: Sequence[str] | None,
        embed: Embed | None,
        embed_id: str | None,
        index_on_write: bool,
    ) -> None:
        self._normalize = normalize
        cache = ShardCache(ttl_s=cache_ttl_s, max_entries=cache_max_entries, max_bytes=cache_max_bytes)
        self.engine = Engine(
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
        try:
            self.fresh = Freshness(self.engine, cache, watch=watch, poll_interval_s=poll_interval_s)
            self.consistency: Consistency = consistency
            # (namespace as given, key) -> (cache entry, record, commit counter and
            # overlay generation before the read, the value's copier) for recent cached gets.
            self._hot: dict[tuple[Any, str], _Hot] = {}
            self._cache = cache
            self._probe_log, self._commits, self._overlay = self.engine.hot_probe()
            self._probe_fork = _fork_generation[0]
            self._hot_epoch = cache.epoch
            self._hot_fork = _fork_generation[0]
            self.hot_hits = 0
            self.hot_on = consistency == "cached"
            self.searcher = Searcher(self.engine, index_fields=index_fields, embed=embed, embed_id=embed_id)
            if index_on_write:
                self.engine.after_apply = self.searcher.note_write
            #: What collectors journal beside and apply to (the protocol's ``collector_engine``).
            self.collector_engine = self.engine
            if not readonly:
                # Best effort: an intent that cannot be finished now fails only
                # the writes to the namespaces it names (see recover_batches).
                self.engine.recover_batches(())
        except BaseException:
            # The engine may already run threads (a format-2 open that found a
            # dead writer's records starts its background fold): a failed open
            # must not leave them, nor its locks, behind.
            with contextlib.suppress(Exception):
                self.engine.close()
            raise

    @property
    def location(self) -> str:
        return self.engine.root

    @property
    def codec(self) -> Codec:
        return self.engine.codec

    @property
    def durability(self) -> Durability:
        return self.engine.durability

    @property
    def readonly(self) -> bool:
        return self.engine.readonly

    def check_open(self) -> None:
        self.engine.check_open()

    def warm(self) -> None:
        self.fresh.ensure_watching()

    def check_value(self, value: Any, key: str | None = None) -> tuple[str, bytes] | None:
        engine = self.engine
        codec = engine.codec.name  # before the check: the bytes are that codec's
        data = engine.check_value(value, key)
        return None if data is None else (codec, data)

    def session_hub(self) -> SessionHub:
        """Sessions in ``<store>/sessions/``: files, flock liveness, polled by the watcher."""
        engine = self.engine
        return SessionHub.on_files(
            engine.root,
            sync=engine.sync,
            readonly=engine.readonly,
            lock_timeout_s=engine.lock_timeout_s,
            poll_interval_s=self.fresh.poll_interval_s,
            is_closed=lambda: engine.closed,
        )

    def close(self) -> None:
        self.hot_on = False
        self._hot = {}
        if not self.engine.closed:
            self.searcher.flush()
        self.fresh.close()
        self.engine.close()

    # ------------------------------------------------------------------ reads

    def _fresh_ok(self, consistency: Consistency | None) -> bool:
        level = consistency or self.consistency
        if level == "cached":
            self.fresh.ensure_watching()
            return True
        if level != "strict":
            raise InvalidValueError(f"consistency must be 'cached' or 'strict', not {level!r}")
        return False

    def get(self, namespace: NamespaceLike, key: str, default: Any, consistency: Consistency | None) -> Any:
        if self.hot_on and consistency is None:
            try:
                hot = self._hot.get((namespace, key))
            except TypeError:  # an unhashable namespace (a list)
                hot = None
            if (
                hot is not None
                and hot[0].fresh_until > time.monotonic()
                and self._hot_fork == _fork_generation[0]  # a forked child takes the full path first
                and hot[2] == self._commits()  # nothing committed since the read (no system call, no frame)
                and hot[3] == self._overlay.generation  # nor did the log's records move (read in, folded)
                and self._hot_epoch == self._cache.epoch
            ):
                hot_rec = hot[1]
                x = hot_rec.get("expires_at")
                if x is None or x > time.time():
                    hot[0].used = True
                    self.hot_hits += 1
                    return hot[4](hot_rec["value"])
        engine = self.engine
        engine.check_open()
        fresh_ok = self._fresh_ok(consistency)
        if engine.log is not self._probe_log or self._probe_fork != _fork_generation[0]:
            # A new log to watch (the store was upgraded under us), or a forked
            # child whose log reopened its control page and overlay.
            self._probe_log, self._commits, self._overlay = engine.hot_probe()
            self._probe_fork = _fork_generation[0]
            self._hot = {}
        # Taken before the read: a change landing during it makes the entry
        # stale at once, never current by mistake.
        commits = self._commits()
        generation = self._overlay.generation
        rec, entry = engine.read_entry(self._normalize(namespace), validate_key(key), fresh_ok=fresh_ok)
        if rec is None:
            return default
        value = rec["value"]
        copy = copier(value)
        if entry is not None and consistency is None:
            cache = self._cache
            if self._hot_epoch != cache.epoch or len(self._hot) >= _HOT_MAX or self._hot_fork != _fork_generation[0]:
                # Entries left the cache: drop our references to them so
                # evicted shards can be freed.
                self._hot = {}
                self._hot_epoch = cache.epoch
                self._hot_fork = _fork_generation[0]
            with contextlib.suppress(TypeError):  # an unhashable namespace
                self._hot[(namespace, key)] = (entry, rec, commits, generation, copy)
        return copy(value)

    def get_hot(self, namespace: NamespaceLike, key: str, missing: Any) -> Any:
        """The value from get()'s hot path, or ``missing`` when only the full path can answer (no system call)."""
        if not self.hot_on:
            return missing
        try:
            hot = self._hot.get((namespace, key))
        except TypeError:  # an unhashable namespace (a list)
            return missing
        if (
            hot is None
            or hot[0].fresh_until <= time.monotonic()
            or self._hot_fork != _fork_generation[0]  # before the counter: a child's page was reopened
            or hot[2] != self._commits()  # another write committed: it may be this key's
            or hot[3] != self._overlay.generation  # the log's records moved since: it may be this key
            or self._hot_epoch != self._cache.epoch
        ):
            return missing
        rec = hot[1]
        x = rec.get("expires_at")
        if x is not None and x <= time.time():
            return missing
        hot[0].used = True
        self.hot_hits += 1
        return hot[4](rec["value"])

    def read_record(self, ns: tuple[str, ...], key: str, consistency: Consistency | None) -> Record | None:
        return self.engine.read(ns, key, fresh_ok=self._fresh_ok(consistency))

    def live(self, ns: tuple[str, ...]) -> dict[str, Record]:
        now = time.time()
        # The log before the shards: a fold between the two reads moves records
        # into shards not yet read (they are then in both), never out of sight.
        unfolded = self.engine.unfolded(ns)
        out: dict[str, Record] = {}
        for _, shard, own in self.engine.iter_shards(ns):
            for key, rec in shard.records.items():
                x = rec.get("expires_at")
                if (x is None or x > now) and own(key):
                    # A split racing the listing can show a key twice: keep the newer.
                    seen = out.get(key)
                    if seen is None or seen["version"] < rec["version"]:
                        out[key] = rec
        # Records the log holds that the shards may not yet: the newer wins.
        for key, (version, logged) in unfolded.items():
            seen = out.get(key)
            if seen is not None and seen["version"] >= version:
                continue
            if logged is None or ((x := logged.get("expires_at")) is not None and x <= now):
                out.pop(key, None)
            else:
                out[key] = logged
        return out

    def keys(self, ns: tuple[str, ...]) -> list[str]:
        return sorted(self.live(ns))

    def list_namespaces(self, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        return self.engine.list_namespaces(prefix)

    def snapshot(self) -> Snapshot:
        self.engine.check_open()
        return Snapshot(self.engine, self._normalize)

    def scan(self, ns: tuple[str, ...], batch_size: int) -> Generator[list[Item], None, None]:
        # Format 2: read through the log instead of folding first (a scan
        # beside a hot writer chased its backlog and paid for the folds,
        # issue 13). The log before the shards, and at the call: a fold during
        # the walk moves records into shards not yet read (then they are in
        # both, and the newer wins), never out of sight.
        return self._scan(ns, batch_size, self.engine.unfolded(ns))

    def _scan(
        self, ns: tuple[str, ...], batch_size: int, unfolded: dict[str, tuple[int, Record | None]]
    ) -> Generator[list[Item], None, None]:
        out: list[Item] = []
        for key, rec, now in self._scan_records(ns, unfolded):
            if rec is None or ((x := rec.get("expires_at")) is not None and x <= now):
                continue
            out.append(item_of(ns, key, rec))
            if len(out) >= batch_size:
                yield out
                out = []
        if out:
            yield out

    def _scan_records(
        self, ns: tuple[str, ...], unfolded: dict[str, tuple[int, Record | None]]
    ) -> Iterator[tuple[str, Record | None, float]]:
        """(key, newest record or None if deleted, the time to judge its expiry by), in key order per shard."""
        engine = self.engine
        # Splits and merges may run meanwhile: the walk says which shards to
        # read and which of their keys have not come out yet (filemem._walk).
        walk = engine.walk(ns, "scanned")
        # What the walk reads while it holds the folds off is kept here and
        # handed out once it let go: the caller's loop body must not run under
        # the hold (every process's folds would wait for it).
        held: list[tuple[str, Record | None, float]] = []
        for prefix in walk:
            engine.check_open()
            shard = self._scan_load(walk.view.shard_path(prefix), prefix)
            if shard is None:
                walk.gone(prefix)  # split or merged away meanwhile: the next listing has its range
                continue
            kept = walk.take(prefix, shard.statkey, shard.splitting, shard.records)
            now = time.time()
            holding = walk.holding
            for key in sorted(shard.records if kept is None else kept):
                rec: Record | None = shard.records[key]
                logged = unfolded.pop(key, None)
                if logged is not None and rec is not None and logged[0] > rec["version"]:
                    rec = logged[1]  # the log's newer version (None: deleted since)
                if holding:
                    held.append((key, rec, now))
                else:
                    yield key, rec, now
        yield from held
        # Keys no shard held when its turn came: the log has them alone.
        now = time.time()
        for key in sorted(unfolded):
            yield key, unfolded[key][1], now

    def _scan_load(self, path: str, prefix: str) -> Shard | None:
        entry = self.engine.cache.peek(path)
        if entry is not None:
            # Already cached: the ordinary load keeps that entry current.
            return self.engine.load(path, prefix)
        got = _fs.read_file(path)
        if got is None:
            return None
        shard = decode_shard(got[0], path, self.engine._codecs, prefix)
        shard.statkey = got[1]  # the walk tells a rewritten file by it
        return shard

    def search(
        self,
        prefix: tuple[str, ...],
        query: str | None,
        filter: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        vector: Sequence[float] | str | None,
    ) -> list[SearchHit]:
        # The searcher validates the query, then folds the log (the index is
        # built from the shard files): a bad query changes nothing on disk.
        return self.searcher.search(prefix, query, filter, limit, offset, vector)

    # ------------------------------------------------------------------ writes

    def apply(self, ops: list[Op]) -> list[Any]:
        return self.engine.apply(ops)

    @property
    def logs_puts(self) -> bool:
        """Whether plain puts go to a write-ahead log as bytes (format 2): then ``Batch`` queues them as bytes.

        A format-1 store writes values into shards, so it would decode them again: it gets ``Op`` s.
        """
        return self.engine.log is not None

    def apply_puts(self, puts: list[tuple[tuple[str, ...], str, str, bytes]]) -> list[Any]:
        """``apply`` of plain puts given as (namespace, key, codec name, bytes): :meth:`Engine.apply_puts`.

        Bytes of another codec than the store's (a convert ran since they
        were encoded) go through ``apply``, which decodes and encodes them again.
        """
        engine = self.engine
        cname = engine.codec.name
        if all(p[2] == cname for p in puts):
            return engine.apply_puts([(ns, key, data) for ns, key, _, data in puts])
        return engine.apply([undecoded_put(*p) for p in puts])

    def prepare_update(self, op: Op) -> None:
        """Refuse now a first value a new namespace could not store (before its directory exists)."""
        if not self.engine.view(op.namespace).dir_known and not self.engine.namespace_exists(op.namespace):
            # A new namespace: the record is absent, so fn(None) is what the
            # commit will store unless another process gets there first (then
            # fn runs again, which its contract allows). Refuse a value that
            # cannot be stored before the directory and lock file exist.
            assert op.fn is not None
            try:
                guess = copy_value(op.fn(None))
            except Exception:
                guess = None
            self.engine.check_value(guess, op.key)

    # ------------------------------------------------------------------ change feed

    def subscribe(self, callback: Callable[[Change], object], prefix: tuple[str, ...], max_queue: int) -> Subscription:
        sub = self.fresh.feed.subscribe(callback, prefix, max_queue)
        self.fresh.ensure_watching()
        return sub

    def subscribe_async(self, prefix: tuple[str, ...], max_queue: int) -> Subscription:
        sub = self.fresh.feed.subscribe_async(prefix, max_queue)
        self.fresh.ensure_watching()
        return sub

    # ------------------------------------------------------------------ upkeep

    def check(self, fix: bool) -> list[Finding]:
        return check_store(self.engine, fix=fix)

    def compact(self) -> dict[str, int]:
        return compact_store(self.engine)

    def stats(self) -> dict[str, Any]:
        fresh = self.fresh.stats()
        fresh["cache"]["hits"] += self.hot_hits  # reads answered by the hot-key table
        return {
            "path": self.location,
            "codec": self.codec.name,
            "durability": self.durability,
            "consistency": self.consistency,
            **self.engine.counters,
            **fresh,
        }
