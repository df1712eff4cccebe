"""The shard cache's rule for concurrent stores: an older look never replaces a newer entry.

A reader stats a shard path, finds nothing, and stores "absent" a moment
later; meanwhile a thread of the same process wrote that shard (a split
installing its leaves) and put it in the cache. Stored fresh, the reader's
older "absent" hid the leaf's keys from every thread of the process for up
to the TTL (tests/regressions/test_review_findings.py::
test_threads_sharing_a_view_lose_nothing failed on it, under CI load, with
one key missing 180 times in a row).
"""

from __future__ import annotations

import time

from filemem._cache import ShardCache
from filemem._shard import Shard


def _shard() -> Shard:
    return Shard("", "json", 1, {"k": {"value": 1, "version": 1, "created_at": 0.0, "updated_at": 0.0}})


def test_an_older_look_does_not_replace_an_install() -> None:
    cache = ShardCache(ttl_s=60.0, max_entries=16, max_bytes=1 << 20)
    looked = time.monotonic()  # the reader's stat: no file yet
    installed = _shard()
    cache.store("p", installed, 10)  # the writer's install, after the file was renamed in
    cache.store("p", None, 0, as_of=looked)  # the reader stores what it saw
    got = cache.fresh("p")
    assert got is not None and got.shard is installed


def test_an_older_look_after_an_invalidation_is_kept_but_not_fresh() -> None:
    cache = ShardCache(ttl_s=60.0, max_entries=16, max_bytes=1 << 20)
    looked = time.monotonic()
    cache.store("p", _shard(), 10)
    cache.invalidate("p")  # a file-system event for a later change
    cache.store("p", None, 0, as_of=looked)
    assert cache.fresh("p") is None  # the next read revalidates with a stat
    entry = cache.peek("p")
    assert entry is not None and entry.shard is None


def test_a_newer_look_replaces_an_older_entry() -> None:
    cache = ShardCache(ttl_s=60.0, max_entries=16, max_bytes=1 << 20)
    cache.store("p", _shard(), 10, as_of=time.monotonic())
    later = time.monotonic()
    cache.store("p", None, 0, as_of=later)
    got = cache.fresh("p")
    assert got is not None and got.shard is None
