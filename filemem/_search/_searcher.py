"""Query execution: shard segments, BM25, vectors, paging (layer L4).

How a search stays correct without trusting the index:

1. The namespaces under the prefix are listed, and each namespace's shards
   are listed and ``stat``-ed (with a filter, loaded through the engine's
   cache instead: the filter needs the values).
2. For each shard, the segment whose identity equals the shard's current
   identity is taken from memory, else from the namespace's index file, else
   built from the shard itself. A segment of another identity is never used.
3. Scores are computed from the segments; the hits of the requested page are
   read from their shards, and if a shard changed since its segment was
   taken the whole search runs again (the last attempt reads every shard, so
   it cannot miss).
4. Segments this process built are written back to the index file for other
   processes (best effort: skipped if another process is writing it).

Ranking is in ``_scoring`` (and docs/search.md).
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from .. import _fs
from .._digest import sha256
from .._engine import Engine, Op, _fork_generation, copy_value
from .._errors import FileMemError, InvalidQueryError, StorageError
from .._shard import Record, Shard
from .._types import Item
from ._filter import check_search_args, compile_filter
from ._indexfile import Entries, IndexFile, bucket_of, index_lock, read_index, write_index
from ._result import SearchHit
from ._scoring import DocRef, Part, query_vector, rank
from ._segment import Embed, Segment, build_segment, decode_segment, encode_segment
from ._text import parse_fields, tokenize

__all__ = ["Searcher"]

#: Searches that found a shard changed under them before the last, all-reading attempt.
_ATTEMPTS: Final = 4
#: A process rewrites a namespace's index file at most this often (the whole
#: file is rewritten; whoever comes later rebuilds only the shards changed
#: since, and close() writes what is pending).
INDEX_WRITE_INTERVAL_S: Final = 1.0


class _NsState:
    """What this process holds of one namespace's index."""

    __slots__ = ("blobs", "dirty", "file_checked", "file_keys", "log_seg", "persisted_at", "segs", "where")

    def __init__(self, where: IndexFile) -> None:
        self.where = where
        #: bucket -> identity of the index file last read or written
        self.file_keys: dict[str, _fs.StatKey] = {}
        self.blobs: Entries = {}
        self.segs: dict[str, Segment] = {}
        #: buckets whose file lacks segments this process built
        self.dirty: set[str] = set()
        self.file_checked = False
        #: When this process last rewrote a file here: it does so at most every
        #: INDEX_WRITE_INTERVAL_S (a rewrite costs a whole file), and close()
        #: writes what is left.
        self.persisted_at = -math.inf
        #: The segment last built from the log's unfolded records (format 2):
        #: the next one reuses its vectors for records whose version is the same.
        self.log_seg: Segment | None = None


class Searcher:
    """Search over one store for one process (the Store's ``search`` delegates here)."""

    def __init__(
        self,
        engine: Engine,
        *,
        index_fields: Sequence[str] | None = None,
        embed: Embed | None = None,
        embed_id: str | None = None,
    ) -> None:
        if embed is not None and not callable(embed):
            raise InvalidQueryError("embed must be a callable: text -> sequence of floats")
        self.engine = engine
        self.fields = parse_fields(index_fields)
        self.embed = embed
        if embed is not None and embed_id is None:
            embed_id = f"{getattr(embed, '__module__', '?')}.{getattr(embed, '__qualname__', type(embed).__name__)}"
        self.embed_id = embed_id if embed is not None else None
        spec = {"v": 1, "fields": [list(f) for f in self.fields] if self.fields else None, "embed": self.embed_id}
        self._spec = spec
        self._states: dict[tuple[str, ...], _NsState] = {}
        self._lock = threading.RLock()
        self._fork = _fork_generation[0]
        self.counters: dict[str, int] = {
            "searches": 0,
            "segments_built": 0,
            "segments_from_file": 0,
            "index_writes": 0,
            "index_writes_skipped": 0,
            "index_files_damaged": 0,
            "search_retries": 0,
            "segments_built_on_write": 0,
            "index_write_errors": 0,
            "index_writes_skipped_busy": 0,
            "log_segments_built": 0,
        }

    # ------------------------------------------------------------------ index state

    @functools.cached_property
    def config(self) -> str:
        """The id of this index configuration, kept in index files (a file of another is rebuilt).

        Computed on first use (every Store builds a Searcher; most never search).
        """
        return sha256(json.dumps(self._spec, sort_keys=True).encode()).hexdigest()[:12]

    def _state(self, ns: tuple[str, ...]) -> _NsState:
        st = self._states.get(ns)
        if st is None:
            st = self._states[ns] = _NsState(IndexFile(self.engine.root, ns, self.config))
        return st

    def _reload(self, state: _NsState) -> None:
        """Merge the namespace's index files into memory where they changed since we last read them."""
        where = state.where
        try:
            buckets = where.buckets()
        except StorageError:
            return  # an index we cannot list is an index we do without
        for b in buckets:
            path = where.path(b)
            try:
                key = _fs.stat_key(os.stat(path))
            except OSError:
                continue
            if key == state.file_keys.get(b):
                continue
            try:
                got = read_index(path, self.config)
            except (ValueError, StorageError):
                self.counters["index_files_damaged"] += 1
                state.file_keys[b] = key
                state.dirty.add(b)  # rewrite it from what we build
                continue
            if got is None:
                continue
            entries, state.file_keys[b] = got
            for p, (k, blob) in entries.items():
                if bucket_of(p) != b:
                    continue
                cur = state.blobs.get(p)
                # Writers stamp each new shard file's mtime above the old
                # one's: the larger mtime describes the newer shard version.
                if cur is None or k[1] >= cur[0][1]:
                    state.blobs[p] = (k, blob)

    def _lookup(self, state: _NsState, prefix: str, key: _fs.StatKey) -> Segment | None:
        seg = state.segs.get(prefix)
        if seg is not None and seg.statkey == key:
            return seg
        ent = state.blobs.get(prefix)
        if (ent is None or ent[0] != key) and not state.file_checked:
            state.file_checked = True
            self._reload(state)
            ent = state.blobs.get(prefix)
        if ent is None or ent[0] != key:
            return None
        try:
            seg = decode_segment(ent[1], key)
        except Exception:  # a bad blob is rebuilt from the shard, never served
            del state.blobs[prefix]
            return None
        self.counters["segments_from_file"] += 1
        state.segs[prefix] = seg
        return seg

    def _old(self, state: _NsState, prefix: str) -> Segment | None:
        """An earlier segment of this shard or of the shard it was split from (to reuse vectors)."""
        if self.embed is None:
            return None
        for d in range(len(prefix), -1, -1):
            p = prefix[:d]
            seg = state.segs.get(p)
            if seg is not None:
                return seg
            ent = state.blobs.get(p)
            if ent is not None:
                try:
                    return decode_segment(ent[1], ent[0])
                except Exception:  # only an optimisation: embed again
                    return None
        return None

    def _build(self, state: _NsState | None, prefix: str, shard: Shard) -> Segment:
        key = shard.statkey
        old = self._old(state, prefix) if state is not None else None
        log_seg = state.log_seg if state is not None else None
        seg = build_segment(shard, key if key is not None else (-1, -1, -1), self.fields, self.embed, old, log_seg)
        self.counters["segments_built"] += 1
        if state is not None and key is not None:
            state.segs[prefix] = seg
            state.blobs[prefix] = (key, encode_segment(seg))
            state.dirty.add(bucket_of(prefix))
        return seg

    def _parts(
        self,
        ns: tuple[str, ...],
        need_shard: bool,
        unfolded: dict[str, tuple[int, Record | None]] | None = None,
    ) -> list[Part]:
        """Each live shard of ``ns`` with its segment (the engine's iter_shards, over segments).

        ``unfolded``: the log's records of ``ns`` the shards may not hold yet
        (key -> (version, record or None)). A shard record they replace is
        hidden, and those no shard holds at their version or newer come as one
        more part, built from the records themselves.
        """
        unfolded = dict(unfolded) if unfolded else {}
        engine = self.engine
        state = self._state(ns)
        state.file_checked = False
        # Splits and merges may run meanwhile: the walk says which shards to
        # read and which of their keys have not been taken yet
        # (filemem._walk). A second listing is needed only if a shard
        # vanished or was flagged: otherwise every existing file was read for
        # its whole range, and leaves split off it later add nothing.
        walk = engine.walk(ns, "searched", settle=True)
        parts: list[Part] = []
        for prefix in walk:
            path = walk.view.shard_path(prefix)
            shard: Shard | None = None
            key: _fs.StatKey | None
            if need_shard:
                shard = engine.load(path, prefix)
                if shard is None:
                    walk.gone(prefix)
                    continue
                key = shard.statkey
            else:
                try:
                    key = _fs.stat_key(os.stat(path))
                except FileNotFoundError:
                    walk.gone(prefix)
                    continue
                except OSError as exc:
                    raise _fs.storage_error(exc, "stat", path) from exc
            seg = self._lookup(state, prefix, key) if key is not None else None
            if seg is None:
                if shard is None:
                    shard = engine.load(path, prefix)
                    if shard is None:
                        walk.gone(prefix)
                        continue
                seg = self._build(state, prefix, shard)
            kept = walk.take(prefix, key, seg.splitting, seg.keys)
            own: Callable[[str], bool] | None = None if kept is None else kept.__contains__
            if unfolded:
                hidden = _replaced(seg, unfolded, own)
                if hidden:
                    own = _without(own, hidden)
            parts.append(Part(ns, prefix, path, seg, own, shard))
        logged = {k: rec for k, (_, rec) in unfolded.items() if rec is not None}
        if logged:
            records = Shard("", self.engine.codec.name, 0, logged)
            state.log_seg = seg = build_segment(records, (-1, -1, -1), self.fields, self.embed, state.log_seg)
            self.counters["log_segments_built"] += 1
            # Its own shard: _materialize takes hits from it, never from a file.
            parts.append(Part(ns, "", "", seg, None, records))
        return parts

    def persist(self, ns: tuple[str, ...]) -> bool:
        """Write what this process built for ``ns`` to its index files; False if skipped."""
        state = self._states.get(ns)
        if state is None or not state.dirty or self.engine.readonly:
            return False
        view = self.engine.view(ns)
        view.refresh()  # a writer's listing may be old: never drop segments of shards that exist
        existing = view.existing
        with index_lock(state.where) as got:
            if not got:
                self.counters["index_writes_skipped"] += 1
                return False
            self._reload(state)  # keep what another process wrote meanwhile
            # Prefixes split away since are dropped: their shards are gone.
            state.blobs = {p: e for p, e in state.blobs.items() if p in existing}
            for b in sorted(state.dirty):
                entries = {p: e for p, e in state.blobs.items() if bucket_of(p) == b}
                state.file_keys[b] = write_index(state.where.path(b), entries, self.config)
                self.counters["index_writes"] += 1
            state.dirty.clear()
        return True

    def reindex(self, ns: tuple[str, ...]) -> int:
        """Bring ``ns``'s index files (this process's configuration) up to date; return segments built.

        What a search of ``ns`` would do to its index, without the search:
        segments of changed shards are rebuilt from the shards (no shard lock
        is taken) and written back under the index's own lock, which is only
        tried (another process writing it means it is being kept up to date).
        """
        self._after_fork()
        with self._lock:
            before = self.counters["segments_built"]
            self._parts(ns, need_shard=False)
            built = self.counters["segments_built"] - before
            self.persist(ns)
        return built

    def note_write(self, ops: Sequence[Op]) -> None:
        """After a committed write: re-index the shards it wrote, in namespaces someone searches.

        Only namespaces that already have an index file of this configuration
        are maintained (one ``stat`` per namespace written tells), so writers
        of namespaces nobody searches pay nothing. The file is rewritten at
        most every :data:`INDEX_WRITE_INTERVAL_S` per namespace; a search
        catches up whatever is left. Never raises: the write has happened,
        and a search rebuilds whatever this missed.
        """
        if self.engine.readonly:
            return
        self._after_fork()
        # Never wait for a search running in another thread: a search holds
        # this lock while its listing may wait for the fold lock (a walk that
        # holds the folds off), and this process's fold thread calls here
        # from its install, holding the fold lock: waiting would deadlock the
        # two until the lock timeout (a search raised LockTimeout in CI). What
        # is skipped costs nothing but work: a search checks every segment
        # against its shard file and rebuilds what this did not.
        if not self._lock.acquire(blocking=False):
            self.counters["index_writes_skipped_busy"] += 1
            return
        try:
            by_ns: dict[tuple[str, ...], set[str]] = {}
            for op in ops:
                by_ns.setdefault(op.namespace, set()).add(op.bits)
            for ns, bits in by_ns.items():
                state = self._states.get(ns)
                if state is None:
                    # No state for namespaces nobody searched: one stat, no memory.
                    where = IndexFile(self.engine.root, ns, self.config)
                    if not os.path.exists(where.lock):  # made by the first index write
                        continue
                    state = self._states[ns] = _NsState(where)
                view = self.engine.view(ns)
                for prefix in {view.resolve(b) for b in bits}:
                    shard = self.engine.load(view.shard_path(prefix), prefix)
                    if shard is None or shard.statkey is None:
                        continue
                    seg = state.segs.get(prefix)
                    if seg is None or seg.statkey != shard.statkey:
                        self._build(state, prefix, shard)
                        self.counters["segments_built_on_write"] += 1
                self._maybe_persist(ns, state)
        except Exception:  # the write committed: a failing embed= or disk must not turn it into an error
            self.counters["index_write_errors"] += 1
        finally:
            self._lock.release()

    def _maybe_persist(self, ns: tuple[str, ...], state: _NsState) -> None:
        now = time.monotonic()
        if state.dirty and now - state.persisted_at >= INDEX_WRITE_INTERVAL_S:
            state.persisted_at = now
            self.persist(ns)

    def flush(self) -> None:
        """At close: write every namespace's pending segments, then forget them. Never raises."""
        self._after_fork()
        with self._lock:
            for ns, state in list(self._states.items()):
                if state.dirty:
                    try:
                        self.persist(ns)
                    except (FileMemError, OSError, ValueError):
                        self.counters["index_write_errors"] += 1
            self._states = {}

    def _after_fork(self) -> None:
        # A forked child may have inherited the lock held by a thread that
        # does not exist there: start over with a new lock (the segments are
        # still valid: they are checked against the files anyway).
        if self._fork != _fork_generation[0]:
            self._fork = _fork_generation[0]
            self._lock = threading.RLock()

    # ------------------------------------------------------------------ search

    def _query_vector(self, vector: Sequence[float] | str | None) -> list[float] | None:
        return query_vector(self.embed, vector)

    def search(
        self,
        prefix: tuple[str, ...],
        query: str | None,
        filter: Mapping[str, Any] | None,
        limit: int,
        offset: int,
        vector: Sequence[float] | str | None,
    ) -> list[SearchHit]:
        """See :meth:`filemem.Store.search` (``prefix`` already checked)."""
        check_search_args(query, limit, offset)
        pred = compile_filter(filter)
        qvec = self._query_vector(vector)
        terms = list(dict.fromkeys(tokenize(query))) if query is not None else None
        if limit == 0 or (terms == [] and qvec is None):
            return []  # a query with no word in it matches nothing
        # Format 2: the log's unfolded records are searched where they are
        # (one more part per namespace, hiding the shard records they
        # replace) instead of folding first: a search beside a hot writer
        # chased its backlog and paid for the folds (issue 13).
        self._after_fork()
        with self._lock:
            self.counters["searches"] += 1
            prefixes = self.engine.list_namespaces(prefix)
            for attempt in range(_ATTEMPTS):
                last = attempt == _ATTEMPTS - 1
                parts: list[Part] = []
                for ns in prefixes:
                    # The log before the shards: a fold in between moves
                    # records into shards not yet read (the newer wins), never
                    # out of sight.
                    unfolded = self.engine.unfolded(ns)
                    parts.extend(self._parts(ns, need_shard=pred is not None or last, unfolded=unfolded))
                page = rank(parts, pred, terms, qvec, limit, offset)
                hits = self._materialize(parts, page)
                for ns in prefixes:
                    self._maybe_persist(ns, self._state(ns))
                if hits is not None:
                    return hits
                self.counters["search_retries"] += 1
        raise AssertionError("the last attempt reads every shard and cannot be stale")  # pragma: no cover

    def _materialize(self, parts: list[Part], page: list[tuple[DocRef, float]]) -> list[SearchHit] | None:
        """Items for the page, or None if a shard changed since its segment was taken."""
        loaded: dict[int, Shard] = {}
        hits: list[SearchHit] = []
        for (pi, doc), score in page:
            part = parts[pi]
            shard = part.shard if part.shard is not None else loaded.get(pi)
            if shard is None:
                shard = self.engine.load(part.path, part.prefix)
                if shard is None or shard.statkey != part.seg.statkey:
                    return None
                loaded[pi] = shard
            key = part.seg.keys[doc]
            rec = shard.records[key]
            item = Item(
                part.ns,
                key,
                copy_value(rec["value"]),
                rec["version"],
                rec["created_at"],
                rec["updated_at"],
                rec.get("expires_at"),
            )
            hits.append(SearchHit(item, score))
        return hits


def _replaced(
    seg: Segment, unfolded: dict[str, tuple[int, Record | None]], own: Callable[[str], bool] | None
) -> set[str]:
    """Keys of ``seg`` the log holds newer (hidden here); pops from ``unfolded`` those the shard has as new.

    A key the shard holds at the log's version or newer (a fold got there
    first) is served from the shard, not from the log.
    """
    keys = seg.keys
    versions = seg.versions
    hidden: set[str] = set()
    for k in list(unfolded) if len(unfolded) <= seg.n else [k for k in keys if k in unfolded]:
        i = bisect.bisect_left(keys, k)
        if i == len(keys) or keys[i] != k or (own is not None and not own(k)):
            continue
        if unfolded[k][0] > versions[i]:
            hidden.add(k)
        else:
            del unfolded[k]
    return hidden


def _without(own: Callable[[str], bool] | None, hidden: set[str]) -> Callable[[str], bool]:
    if own is None:
        return lambda k: k not in hidden
    inner = own
    return lambda k: inner(k) and k not in hidden
