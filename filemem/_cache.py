"""The per-process shard cache: LRU by entries and bytes, with a TTL (layer L3).

Each entry is one parsed shard (or the fact that a shard file is absent),
with the version key it was read at and the time it was last known current.
While an entry is *fresh* (known current less than ``ttl_s`` ago, and not
invalidated by a file-system event since), a read uses it with no system
call at all. After that, the engine revalidates it with one ``stat``: if the
version key still matches, the entry is fresh again without a re-parse.

The TTL is the safety net for lost events (queue overflow, a watch limit, a
file system that sends none): no cached read is ever older than ``ttl_s``.
Thread-safe; a forked child starts empty (the engine replaces its cache).
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import OrderedDict
from typing import Final

from ._shard import SHARD_SUFFIX, Shard

__all__ = ["ABSENT", "CacheEntry", "ShardCache"]

#: Stand-in for "no shard file at this path" in an entry.
ABSENT: Final = None
_NEVER: Final = float("-inf")


class CacheEntry:
    """One cached shard (or absence), when it was last known current, and whether it was used since."""

    __slots__ = ("fresh_until", "seen", "shard", "size", "used")

    def __init__(self, shard: Shard | None, size: int, fresh_until: float, seen: float = _NEVER) -> None:
        self.shard = shard
        self.size = size
        self.fresh_until = fresh_until
        #: When the file was looked at for this entry (monotonic): an older
        #: look never replaces it (ShardCache.store).
        self.seen = seen
        #: Set by every read that uses the entry; eviction gives used entries a
        #: second chance (CLOCK), so a read costs one attribute store, not a
        #: reordering under a lock.
        self.used = False


class ShardCache:
    """Bounded LRU of parsed shards with a freshness TTL.

    Example::

        cache = ShardCache(ttl_s=1.0, max_entries=1024, max_bytes=64 << 20)
        cache.store("/s/ns/a/s.shard", shard, size=len(data))
        hit = cache.fresh("/s/ns/a/s.shard")   # the shard, while fresh
    """

    def __init__(self, *, ttl_s: float, max_entries: int, max_bytes: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.revalidations = 0
        self.invalidations = 0
        self.evictions = 0
        self.drops = 0
        #: Bumped whenever entries leave the cache; holders of entry
        #: references (the Store's hot-key table) drop theirs when it moves.
        self.epoch = 0

    # The read path: a dict lookup and a clock read, no lock, no system call.
    def fresh(self, path: str) -> CacheEntry | None:
        """The entry for ``path`` if it is fresh, else None."""
        entry = self._entries.get(path)
        if entry is not None and entry.fresh_until > time.monotonic():
            self.hits += 1
            entry.used = True
            return entry
        self.misses += 1
        return None

    def peek(self, path: str) -> CacheEntry | None:
        """The entry for ``path``, fresh or not (to compare version keys)."""
        return self._entries.get(path)

    def store(self, path: str, shard: Shard | None, size: int, *, as_of: float | None = None) -> None:
        """Remember ``shard`` (None: the file is absent) as current at ``as_of`` (default now).

        Readers pass the time *before* they looked at the file, so a slow read
        cannot stretch an entry's life past the TTL.
        """
        seen = time.monotonic() if as_of is None else as_of
        entry = CacheEntry(shard, size, seen + self.ttl_s, seen)
        with self._lock:
            old = self._entries.get(path)
            if old is not None and old.seen > seen:
                # This reader looked at the file before the entry there was
                # made: a thread of this process wrote the shard meanwhile (a
                # split installing its leaves) or a later read stored it. The
                # older look must not replace it: stored fresh, a reader's
                # "absent" taken before a split created the leaf hid the
                # leaf's keys from this process for up to the TTL. If that
                # newer entry was since invalidated, ours is stored but not
                # fresh: the next read revalidates with a stat.
                if old.fresh_until != _NEVER:
                    return
                entry.fresh_until = _NEVER
            old = self._entries.pop(path, None)
            if old is not None:
                old.fresh_until = _NEVER  # superseded: no one may serve it any more
                self._bytes -= old.size
            self._entries[path] = entry
            self._bytes += size
            chances = len(self._entries)
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                victim, gone = self._entries.popitem(last=False)
                if gone.used and chances > 0 and gone is not entry:
                    gone.used = False  # used since it was last considered: a second chance
                    self._entries[victim] = gone
                    chances -= 1
                    continue
                gone.fresh_until = _NEVER
                self._bytes -= gone.size
                self.evictions += 1
                self.epoch += 1

    def revalidated(self, path: str, entry: CacheEntry, *, as_of: float | None = None) -> None:
        """``entry`` was checked against the file (at ``as_of``) and is current: fresh again."""
        entry.fresh_until = (time.monotonic() if as_of is None else as_of) + self.ttl_s
        entry.used = True
        self.revalidations += 1
        with self._lock:
            if self._entries.get(path) is entry:
                self._entries.move_to_end(path)

    def invalidate(self, path: str) -> None:
        """The file at ``path`` changed: the next read revalidates (one stat)."""
        entry = self._entries.get(path)
        if entry is not None:
            entry.fresh_until = _NEVER
            self.invalidations += 1

    def invalidate_family(self, directory: str, prefix: str) -> None:
        """Shard ``prefix`` appeared in ``directory``: its ancestors and descendants may be gone unannounced.

        A new prefix means a split (its parent's file vanished) or a merge
        (its leaves' did). A watcher can miss a short-lived file's whole life
        (a polling round that never ran while a split's leaf existed), so the
        vanished file's deletion may never be reported, and its entry, still
        fresh, kept serving the key's old value for up to the TTL through the
        hot path (issue 13's flaky visibility test). Such entries must be
        revalidated before use. One pass over the entries: a new prefix is a
        split or merge, far rarer than a write.
        """
        head = os.path.join(directory, "s")
        with self._lock:
            for path, entry in self._entries.items():
                if not path.startswith(head) or not path.endswith(SHARD_SUFFIX):
                    continue
                other = path[len(head) : -len(SHARD_SUFFIX)]
                if other != prefix and os.sep not in other and (other.startswith(prefix) or prefix.startswith(other)):
                    entry.fresh_until = _NEVER
                    self.invalidations += 1

    def forget_covering(self, directory: str, bits: list[str], deepest: int) -> int:
        """Drop every shard entry in ``directory`` whose prefix (at most ``deepest`` bits) starts some of ``bits``.

        ``bits`` must be sorted. The same entries as forgetting the shard path
        of every prefix of every key's bits up to ``deepest``, in one pass over
        the entries (a few thousand) instead of one path per key and depth
        (570,000 ``os.path.join`` calls after a fold of 30,000 keys). Returns
        how many were dropped.
        """
        head = os.path.join(directory, "s")
        cut = len(head)
        gone: list[str] = []
        with self._lock:
            for path in self._entries:
                if not path.startswith(head) or not path.endswith(SHARD_SUFFIX):
                    continue
                prefix = path[cut : -len(SHARD_SUFFIX)]
                if len(prefix) > deepest or os.sep in prefix:
                    continue
                i = bisect.bisect_left(bits, prefix)
                if i < len(bits) and bits[i].startswith(prefix):
                    gone.append(path)
            for path in gone:
                old = self._entries.pop(path)
                old.fresh_until = _NEVER
                self._bytes -= old.size
            if gone:
                self.epoch += 1
        return len(gone)

    def forget(self, path: str) -> None:
        """Drop the entry for ``path``."""
        with self._lock:
            old = self._entries.pop(path, None)
            if old is not None:
                old.fresh_until = _NEVER
                self._bytes -= old.size
                self.epoch += 1

    def invalidate_all(self) -> None:
        """Events were lost: every entry must be revalidated before use."""
        with self._lock:
            for entry in self._entries.values():
                entry.fresh_until = _NEVER
            self.drops += 1

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            for entry in self._entries.values():
                entry.fresh_until = _NEVER
            self._entries.clear()
            self._bytes = 0
            self.epoch += 1

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Approximate bytes held (sizes of the files parsed)."""
        return self._bytes

    def stats(self) -> dict[str, int | float]:
        """Counters for ``Store.stats()``."""
        return {
            "entries": len(self._entries),
            "bytes": self._bytes,
            "hits": self.hits,
            "misses": self.misses,
            "revalidations": self.revalidations,
            "invalidations": self.invalidations,
            "evictions": self.evictions,
            "drops": self.drops,
            "ttl_s": self.ttl_s,
        }
