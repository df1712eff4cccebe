"""The read path of a fresh entry, the cache's bounds and LRU order, and the stats() counters."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import time
from collections.abc import Iterator

import pytest

import filemem

from ._util import make_store, wait_until

NS = ("agent", "facts")

# ---------------------------------------------------------------- no system call while fresh

# Format 1's shard cache, counted through watcher events and stats (format 2: tests/wal/test_cache_bounds_on_log.py).
pytestmark = pytest.mark.store_format(1)


class SyscallMade(Exception):
    """A cached read reached for the operating system."""


_TRAPPED = ("stat", "lstat", "fstat", "open", "read", "listdir", "scandir", "access", "getpid", "readlink")


@contextlib.contextmanager
def no_syscalls() -> Iterator[list[str]]:
    """Make the usual file-system entry points raise (and record) for the duration."""
    calls: list[str] = []

    def trap(name: str) -> object:
        def raiser(*args: object, **kwargs: object) -> None:
            calls.append(f"{name}{args[:1]!r}")
            raise SyscallMade(name)

        return raiser

    saved = {name: getattr(os, name) for name in _TRAPPED}
    saved_open = builtins.open, io.open
    try:
        for name in _TRAPPED:
            setattr(os, name, trap(f"os.{name}"))
        builtins.open = io.open = trap("open")  # type: ignore[assignment]
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(os, name, fn)
        builtins.open, io.open = saved_open


@pytest.mark.parametrize("watch", ["auto", "off"])
def test_fresh_cached_read_makes_no_system_call(store_path: str, watch: str) -> None:
    with make_store(store_path, watch="off") as writer, make_store(store_path, watch=watch) as reader:
        writer.put(NS, "k", {"v": 1})
        writer.put(NS, "other", 2)
        empty = ("nobody", "here")

        def reads() -> list[object]:
            return [
                reader.get(NS, "k"),
                reader.get_item(NS, "k").value,  # type: ignore[union-attr]
                reader.get(NS, "missing", "dflt"),  # absent key of an existing shard
                reader.get(empty, "x", "dflt"),  # absent shard: the cache remembers absence
                (NS, "other") in reader,
                reader.mapping(NS)["k"],
            ]

        expected = [{"v": 1}, {"v": 1}, "dflt", "dflt", True, {"v": 1}]
        assert reads() == expected  # warms the cache (and starts the watcher)
        time.sleep(0.1)  # nothing writes now; any straggling event would show in the counter
        assert reads() == expected
        before = reader.stats()
        with no_syscalls() as calls:
            for _ in range(3):
                got = reads()
            # The trap is live: a strict read must reach the file system.
            with pytest.raises(SyscallMade):
                reader.get(NS, "k", consistency="strict")
        strict_calls = calls.pop()
        assert calls == [], f"fresh cached reads made system calls: {calls}"
        assert "stat" in strict_calls
        assert got == expected
        after = reader.stats()
        assert after["cache"]["invalidations"] == before["cache"]["invalidations"]  # no event refreshed it
        assert after["shard_parses"] == before["shard_parses"]


# ---------------------------------------------------------------- bounds


def _fill(writer: filemem.Store, n: int, value: object = "v") -> list[tuple[str, ...]]:
    namespaces = [("bound", f"ns{i:02d}") for i in range(n)]
    for ns in namespaces:
        writer.put(ns, "k", value)
    return namespaces


def test_cache_max_entries_is_respected(store_path: str) -> None:
    with make_store(store_path, watch="off") as writer, make_store(store_path, cache_max_entries=5) as reader:
        namespaces = _fill(writer, 20)
        for ns in namespaces * 2:
            assert reader.get(ns, "k") == "v"
            assert reader.stats()["cache"]["entries"] <= 5
        assert reader.stats()["cache"]["evictions"] >= 2 * 20 - 5
    # A writer's own cache is bounded too.
    with make_store(store_path, watch="off", cache_max_entries=3) as writer2:
        for ns in _fill(writer2, 10, "w"):
            assert writer2.stats()["cache"]["entries"] <= 3
            assert writer2.get(ns, "k") == "w"


def test_cache_max_bytes_is_respected(store_path: str) -> None:
    value = "x" * 1000
    with make_store(store_path, watch="off") as writer:
        namespaces = _fill(writer, 10, value)
    with make_store(store_path, watch="off") as probe:
        probe.get(namespaces[0], "k")
        shard_bytes = probe.stats()["cache"]["bytes"]
    assert shard_bytes > 1000
    limit = 3 * shard_bytes + shard_bytes // 2
    with make_store(store_path, cache_max_bytes=limit) as reader:
        for ns in namespaces * 2:
            assert reader.get(ns, "k") == value
            cache = reader.stats()["cache"]
            assert cache["bytes"] <= limit
            assert cache["entries"] <= 3
    # Smaller than one shard: nothing stays cached, every read is still right.
    with make_store(store_path, cache_max_bytes=shard_bytes - 1) as tiny:
        for ns in namespaces:
            assert tiny.get(ns, "k") == value
            assert tiny.get(ns, "k") == value
            assert tiny.stats()["cache"]["bytes"] <= shard_bytes - 1


def _parses(store: filemem.Store, ns: tuple[str, ...]) -> int:
    """Shard parses one cached read of ``ns`` cost (0: it was still cached)."""
    before = store.stats()["shard_parses"]
    assert store.get(ns, "k") == "v"
    return int(store.stats()["shard_parses"] - before)


def test_lru_evicts_the_least_recently_stored(store_path: str) -> None:
    with make_store(store_path, watch="off") as writer, make_store(store_path, watch="off", cache_max_entries=3) as r:
        a, b, c, d = _fill(writer, 4)
        for ns in (a, b, c, d):
            assert _parses(r, ns) == 1
        assert [_parses(r, ns) for ns in (d, c, b)] == [0, 0, 0]  # kept (fresh hits change nothing)
        assert _parses(r, a) == 1  # a, the oldest, was evicted by d


def test_lru_revalidation_counts_as_use(store_path: str) -> None:
    with (
        make_store(store_path, watch="off") as writer,
        make_store(store_path, watch="off", cache_ttl_s=0.2, cache_max_entries=3) as r,
    ):
        a, b, c, d = _fill(writer, 4)
        for ns in (a, b, c):
            r.get(ns, "k")
        time.sleep(0.25)
        assert _parses(r, a) == 0  # stale: revalidated by a stat, now the most recently used
        assert _parses(r, d) == 1  # evicts the least recently used: b
        assert _parses(r, a) == 0
        assert _parses(r, b) == 1


def test_lru_fresh_hit_counts_as_use(store_path: str) -> None:
    """A fresh hit is a use: the LRU must not evict a shard just read before an older, idle one."""
    with make_store(store_path, watch="off") as writer, make_store(store_path, watch="off", cache_max_entries=3) as r:
        a, b, c, d = _fill(writer, 4)
        for ns in (a, b, c):
            r.get(ns, "k")
        assert _parses(r, a) == 0  # a fresh hit: a is now the most recently used
        assert _parses(r, d) == 1  # evicts the least recently used, b
        assert _parses(r, a) == 0, "a, just read, was evicted instead of b, the least recently used"


def test_cache_options_are_validated(store_path: str) -> None:
    for bad in ({"cache_ttl_s": -1}, {"cache_max_entries": 0}, {"cache_max_bytes": -1}, {"poll_interval_s": 0}):
        with pytest.raises(filemem.InvalidValueError):
            filemem.Store(store_path, **bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- stats()


def test_stats_counters_move_as_expected(store_path: str) -> None:
    with make_store(store_path) as reader, make_store(store_path, watch="off") as writer:
        writer.put(NS, "k", 1)
        s0 = reader.stats()
        assert s0["watcher"]["backend"] == "none"
        assert s0["cache"]["entries"] == 0
        assert reader.get(NS, "k") == 1
        s1 = reader.stats()
        assert s1["watcher"]["backend"] == "inotify"
        assert s1["cache"]["misses"] == s0["cache"]["misses"] + 1
        assert s1["cache"]["entries"] >= 1
        assert s1["cache"]["bytes"] > 0
        assert s1["cache"]["ttl_s"] == 30.0
        assert s1["shard_parses"] == s0["shard_parses"] + 1

        # Another writer: an event invalidates our entry.
        writer.put(NS, "k", 2)
        wait_until(lambda: reader.stats()["cache"]["invalidations"] > s1["cache"]["invalidations"])
        s2 = reader.stats()
        assert s2["watcher"]["events"] > s1["watcher"]["events"]
        assert reader.get(NS, "k") == 2
        s3 = reader.stats()
        assert s3["cache"]["misses"] == s2["cache"]["misses"] + 1
        assert s3["shard_parses"] == s2["shard_parses"] + 1

        # Lost events: a drop; the next read revalidates with a stat, no parse.
        reader._fresh.events_lost()
        s4 = reader.stats()
        assert s4["cache"]["drops"] == s3["cache"]["drops"] + 1
        assert s4["watcher"]["events_lost"] == s3["watcher"]["events_lost"] + 1
        assert reader.get(NS, "k") == 2
        s5 = reader.stats()
        assert s5["cache"]["revalidations"] == s4["cache"]["revalidations"] + 1
        assert s5["shard_parses"] == s4["shard_parses"]

        # Strict reads are never cache hits.
        for _ in range(5):
            assert reader.get(NS, "k", consistency="strict") == 2
        assert reader.stats()["cache"]["hits"] == s5["cache"]["hits"]

        # The feed's figures.
        assert s5["feed"]["subscribers"] == 0
        seen: list[filemem.Change] = []
        sub = reader.subscribe(seen.append, namespace_prefix=NS)
        assert reader.stats()["feed"]["subscribers"] == 1
        writer.put(NS, "k", 3)
        wait_until(lambda: reader.stats()["feed"]["published"] >= 1)
        sub.close()
        assert reader.stats()["feed"]["subscribers"] == 0


def test_stats_revalidation_after_ttl(store_path: str) -> None:
    with make_store(store_path, watch="off", cache_ttl_s=0.1) as store:
        store.put(NS, "k", 1)
        s0 = store.stats()
        time.sleep(0.15)
        assert store.get(NS, "k") == 1
        s1 = store.stats()
        assert s1["cache"]["revalidations"] == s0["cache"]["revalidations"] + 1
        assert s1["cache"]["misses"] == s0["cache"]["misses"] + 1
        assert s1["shard_parses"] == s0["shard_parses"]


def test_stats_hits_count_every_fresh_cached_read(store_path: str) -> None:
    """Every fresh cached read is a hit, including those the Store's hot-key table answers."""
    with make_store(store_path, watch="off") as store:
        store.put(NS, "k", 1)
        assert store.get(NS, "k") == 1
        s0 = store.stats()["cache"]
        for _ in range(10):
            assert store.get(NS, "k") == 1
        s1 = store.stats()["cache"]
        assert s1["hits"] == s0["hits"] + 10
        assert s1["misses"] == s0["misses"]
