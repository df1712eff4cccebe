"""Keeping one process's view of a store fresh (layer L3).

Ties together the shard cache, the watcher and the change feed for one Store
in one process. The watcher starts lazily (no thread until a cached read or a
subscription needs it), is restarted in a forked child, and is stopped and
joined by ``close()``.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Literal

from ._cache import ShardCache
from ._engine import Engine
from ._errors import FileMemError
from ._feed import ChangeFeed
from ._fs import read_file
from ._shard import decode_shard
from ._watch import ShardEventKind, Watcher, start_watcher

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
        self._watcher: Watcher | None = None
        self._lock = threading.Lock()
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
            )
            # Entries cached before anyone watched were never covered by
            # events: revalidate each once before trusting it.
            self.cache.invalidate_all()

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
        if self.feed.active:
            self.feed.publish(directory, name, "write" if kind == "written" else "delete")

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

    def close(self) -> None:
        """Stop the watcher and end every subscription."""
        self._closed = True
        self.feed.close()
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
