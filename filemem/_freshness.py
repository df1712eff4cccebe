"""Keeping one process's view of a store fresh (layer L3).

Ties together the shard cache, the watcher and the change feed for one Store
in one process. The watcher starts lazily (no thread until a cached read or a
subscription needs it), is restarted in a forked child, and is stopped and
joined by ``close()``.

Where the change feed comes from depends on the store's format. Format 1:
shard files, as the watcher reports them. Format 2: the write-ahead log, read
through the engine's :meth:`~filemem._engine.Engine.follow_log` when the
watcher reports the commit signal; each commit is published once, in commit
order, as soon as it is durable, and shard files (rewritten by the fold, which
changes no record) feed nothing.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Literal

from ._cache import ShardCache
from ._engine import INTERNAL_NS, Engine
from ._errors import FileMemError
from ._feed import ChangeFeed
from ._fs import read_file
from ._shard import decode_shard
from ._types import Item
from ._wal._carry import Carried, is_carried_float
from ._wal._format import PUT
from ._watch import ShardEventKind, Watcher, start_watcher

if TYPE_CHECKING:
    from ._wal._tail import Committed, LogTail

__all__ = ["Freshness", "WatchMode"]

WatchMode = Literal["auto", "native", "polling", "off"]


class Freshness:
    """The cache, watcher and feed of one Store in one process."""

    def __init__(self, engine: Engine, cache: ShardCache, *, watch: WatchMode, poll_interval_s: float) -> None:
        self.engine = engine
        self.watch = watch
        self.poll_interval_s = poll_interval_s
        self.cache = cache
        self.feed = ChangeFeed(engine.ns_root, self._record_versions)
        self.feed.on_listening = self._listening
        self._watcher: Watcher | None = None
        self._lock = threading.Lock()
        #: Format 2: this process's cursor over the log while anyone listens.
        self._tail: LogTail | None = None
        self._tail_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._closed = False
        self.events = 0
        self.lost = 0
        engine.cache = self.cache
        engine.after_fork = self.after_fork

    def _record_versions(self, path: str) -> dict[str, tuple[int, float]] | None:
        """``{key: (version, updated_at)}`` of a shard file, read outside the cache (the feed's recovery)."""
        try:
            got = read_file(path)
            if got is None:
                return None
            shard = decode_shard(got[0], path, self.engine._codecs)
        except FileMemError:
            return None
        return {key: (int(rec["version"]), float(rec["updated_at"])) for key, rec in shard.records.items()}

    # ------------------------------------------------------------------ watcher

    @property
    def watching(self) -> bool:
        """Whether a watcher thread runs."""
        return self._watcher is not None

    def ensure_watching(self) -> None:
        """Start the watcher if it is wanted and not yet running (cheap when running)."""
        if self._watcher is not None or self.watch == "off" or self._closed:
            return
        with self._lock:
            if self._started_by_other() or self._closed:
                return
            self._watcher = start_watcher(
                self.engine.root,
                self,
                mode="polling" if self.watch == "polling" else "auto",
                poll_interval_s=self.poll_interval_s,
                signal=self.engine.commit_signal(),
            )
            # Entries cached before anyone watched were never covered by
            # events: revalidate each once before trusting it.
            self.cache.invalidate_all()
        # Commits between the feed's start and the watcher's go out now, not at the next one.
        self.log_changed()

    def _started_by_other(self) -> bool:
        # Re-read under the lock: another thread may have started it meanwhile.
        return self._watcher is not None

    def backend(self) -> str:
        """ "inotify", "polling" or "none"."""
        return self._watcher.backend if self._watcher is not None else "none"

    # ------------------------------------------------------------------ sink (watcher thread)

    def shard_changed(self, directory: str, name: str, kind: ShardEventKind) -> None:
        """A shard file changed: invalidate it, mark the listing, tell subscribers."""
        self.events += 1
        path = os.path.join(directory, name)
        self.cache.invalidate(path)
        view = self.engine.view_of_dir(directory)
        if view is not None:
            prefix = name[1 : -len(".shard")]
            if (kind == "deleted") == (prefix in view.existing):
                view.stale = True  # a shard appeared or vanished: re-list on next read
                if kind != "deleted":
                    # A split's parent or a merge's leaves vanished with it, and
                    # their deletion may never be reported (see invalidate_family).
                    self.cache.invalidate_family(directory, prefix)
        if self.feed.active and not self.feed.from_log:
            self.feed.publish(directory, name, "write" if kind == "written" else "delete")

    def log_changed(self) -> None:
        """A commit to the log may have been published: hand what is new to the feed, in commit order."""
        if not self.feed.active:
            return
        # One reader at a time, so commits go out in order; the tail's own lock
        # is not held while publishing (a subscriber closed by its full queue
        # may stop the tail, see _listening).
        with self._publish_lock:
            with self._tail_lock:
                tail = self._tail
                if tail is None:
                    return
                try:
                    committed, lost = tail.read()
                except FileMemError:
                    # A damaged log is check's to report; subscribers re-read.
                    committed, lost = [], True
            if lost:
                self.feed.publish_missed()
            for batch in committed:
                items = self._items_of(batch)
                for namespace, keys in batch.keys.items():
                    if namespace and namespace[0] == INTERNAL_NS:
                        continue  # the store's own records (journal replay marks): never announced
                    self.feed.publish_logged(
                        namespace, keys, batch.time, tuple(items[namespace][k] for k in keys) if items else None
                    )

    def _items_of(self, batch: Committed) -> dict[tuple[str, ...], dict[str, Item | None]] | None:
        """What each key of a commit holds after it (None: deleted); None if a value does not decode.

        Decoded once here for every subscriber: reading each key back instead
        costs a log refresh per key and may see a later write. A carried
        ``created_at`` resolves against the key's previous record in log
        order (_wal._carry): what the tail found it carries from the key's
        previous unfolded op, else the shard's record.
        """
        out: dict[tuple[str, ...], dict[str, Item | None]] = {}
        codecs = self.engine._codecs
        try:
            for i, op in enumerate(batch.ops):
                by_key = out.setdefault(op.namespace, {})
                if op.kind != PUT or op.value is None or op.codec is None:
                    by_key[op.key] = None
                    continue
                value = codecs[op.codec].decode(op.value)
                version = batch.first_lsn + i
                created: Any = op.created_at
                if is_carried_float(created):  # NaN: carried over from the record the put replaced (_wal._carry)
                    base = batch.carried[i] if batch.carried else None
                    if base is None:
                        base = Carried(batch.time)
                    if isinstance(base, Carried):
                        base = self.engine.resolve_created(op.namespace, op.key, version, base)
                    created = base
                by_key[op.key] = Item(op.namespace, op.key, value, version, created, batch.time, op.expires_at)
        except (KeyError, ValueError, FileMemError):
            return None  # the subscribers read the keys themselves; the log's readers report the damage
        return out

    def _listening(self, listening: bool) -> None:
        """The feed's first subscriber came (follow the log from now on) or its last one left (stop)."""
        with self._tail_lock:
            old, self._tail = self._tail, None
            if old is not None:
                old.close()
            if listening and not self.engine.closed:
                self._tail = self.engine.follow_log()
            self.feed.from_log = self._tail is not None

    def events_lost(self) -> None:
        """The watcher lost events: nothing cached can be trusted without a stat."""
        self.lost += 1
        self.cache.invalidate_all()
        for view in list(self.engine._views.values()):
            view.stale = True
        self.feed.publish_missed()

    # ------------------------------------------------------------------ lifecycle

    def after_fork(self) -> None:
        """In a forked child: threads did not survive; start over, lazily."""
        self._watcher = None  # its thread is gone; its descriptors die with the process
        self._lock = threading.Lock()
        self.cache.clear()  # no watcher kept the parent's entries fresh for us
        self.cache = ShardCache(
            ttl_s=self.cache.ttl_s, max_entries=self.cache.max_entries, max_bytes=self.cache.max_bytes
        )
        self.engine.cache = self.cache
        self.feed = ChangeFeed(self.engine.ns_root)
        self.feed.on_listening = self._listening
        self._tail_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        tail, self._tail = self._tail, None
        if tail is not None:
            tail.close()  # the parent's descriptors: closing our copies leaves the parent's alone

    def close(self) -> None:
        """Stop the watcher and end every subscription."""
        self._closed = True
        self.feed.close()
        with self._tail_lock:
            tail, self._tail = self._tail, None
        if tail is not None:
            tail.close()
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def stats(self) -> dict[str, Any]:
        """Cache, watcher and feed figures."""
        w = self._watcher
        return {
            "cache": self.cache.stats(),
            "watcher": {
                "backend": self.backend(),
                "events": self.events,
                "events_lost": self.lost,
                "raw_events": getattr(w, "events", 0),
            },
            "feed": {"subscribers": len(self.feed._subs), "published": self.feed.published},
        }
