"""Lost events: the cache must fall back on revalidation, and the TTL bounds staleness.

Overflow is simulated through the Freshness sink's ``events_lost()`` (what the
inotify backend calls on IN_Q_OVERFLOW); a dead watcher by stopping it while
the Store still believes it runs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import filemem
from filemem import _fs

from ._peer import Peer
from ._util import make_store

NS = ("agent", "facts")

# Format 1: lost watcher events and the TTL keep its cache fresh; format 2 reads the commit counter on every get.
pytestmark = pytest.mark.store_format(1)


def _stop_watcher(store: filemem.Store) -> None:
    """Kill the watcher silently: the store keeps it as its watcher, so none is restarted."""
    watcher = store._fresh._watcher
    assert watcher is not None
    watcher.stop()


def test_events_lost_makes_next_read_revalidate(store_path: str) -> None:
    with make_store(store_path) as reader, make_store(store_path, watch="off") as writer:
        writer.put(NS, "k", "old")
        assert reader.get(NS, "k") == "old"  # starts the watcher
        assert reader.get(NS, "k") == "old"  # revalidated once after the start, now fresh
        assert reader.stats()["watcher"]["backend"] == "inotify"
        _stop_watcher(reader)
        writer.put(NS, "k", "new")
        time.sleep(0.05)
        # The event was lost (no watcher): the entry is still fresh, well inside 30 s.
        assert reader.get(NS, "k") == "old"
        before = reader.stats()
        reader._fresh.events_lost()
        assert reader.get(NS, "k") == "new"
        after = reader.stats()
        assert after["watcher"]["events_lost"] == before["watcher"]["events_lost"] + 1
        assert after["cache"]["drops"] == before["cache"]["drops"] + 1
        assert after["shard_parses"] == before["shard_parses"] + 1


def test_events_lost_without_change_costs_one_stat_not_a_parse(store_path: str) -> None:
    with make_store(store_path) as store:
        store.put(NS, "k", 1)
        store.put(("other",), "k", 2)
        assert store.get(NS, "k") == 1
        assert store.get(("other",), "k") == 2
        # Let the events of our own writes land, then read both fresh.
        time.sleep(0.1)
        store.get(NS, "k")
        store.get(("other",), "k")
        before = store.stats()
        store._fresh.events_lost()
        assert store.get(NS, "k") == 1
        assert store.get(("other",), "k") == 2
        after = store.stats()
        assert after["cache"]["revalidations"] == before["cache"]["revalidations"] + 2
        assert after["shard_parses"] == before["shard_parses"]


def test_events_lost_marks_listings_stale(store_path: str) -> None:
    """A shard that appeared while events were lost (a new region after a split) is found."""
    with (
        make_store(store_path, shard_max_bytes=1024) as reader,
        make_store(store_path, watch="off", shard_max_bytes=1024) as writer,
    ):
        writer.put(NS, "seed", 0)
        assert reader.get(NS, "seed") == 0
        _stop_watcher(reader)
        for i in range(60):  # several splits the reader hears nothing about
            writer.put(NS, f"k{i}", "x" * 40)
        reader._fresh.events_lost()
        for i in range(60):
            assert reader.get(NS, f"k{i}") == "x" * 40
        assert reader.get(NS, "seed") == 0


@pytest.mark.parametrize("watch", ["auto", "off"])
def test_no_read_is_staler_than_ttl_without_events(store_path: str, watch: str) -> None:
    """A writer process puts 0, 1, 2, ... while this process spins on cached gets with no working watcher.

    For every read: any put that returned more than TTL before the read started
    must be visible (a little slack for the gap between reading a file and
    stamping the entry). Both processes use CLOCK_MONOTONIC, one clock.
    """
    ttl = 0.3
    slack = 0.5  # generous: a loaded machine can preempt a reader between its read and its stamp
    with make_store(store_path, cache_ttl_s=ttl, watch=watch) as reader:
        reader.put(NS, "k", -1)
        assert reader.get(NS, "k") == -1
        if watch == "auto":
            _stop_watcher(reader)
        with Peer(store_path, watch="off", durability="flush") as writer:
            writer.send("write_for", NS, "k", 1.5)
            reads: list[tuple[float, Any]] = []
            deadline = time.monotonic() + 1.8
            while time.monotonic() < deadline:
                start = time.monotonic()
                reads.append((start, reader.get(NS, "k")))
            puts = writer.result()
    assert len(puts) > 10, "the writer hardly wrote"
    returned_at = dict(puts)
    worst = 0.0
    for start, value in reads:
        # The first put newer than what we read: how long before our read it had returned.
        newer = value + 1
        if newer in returned_at:
            worst = max(worst, start - returned_at[newer])
    assert worst <= ttl + slack, f"a read was {worst:.3f} s staler than the newest write (TTL {ttl})"
    assert worst > 0, "no read was ever served stale: the cache was not in play"


def test_ttl_counts_from_before_the_file_was_read(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry is fresh for the TTL from *before* the file was read: a slow read must not stretch it."""
    ttl = 0.3
    with (
        make_store(store_path, cache_ttl_s=ttl, watch="off") as reader,
        make_store(store_path, watch="off") as writer,
    ):
        writer.put(NS, "k", "old")
        real_read = _fs.read_file
        slow = threading.Event()
        slow.set()
        put_returned: list[float] = []

        def slow_read(path: str) -> Any:
            got = real_read(path)
            if slow.is_set() and threading.current_thread() is threading.main_thread():
                slow.clear()
                # The file is read; another process replaces it before we are done.
                writer.put(NS, "k", "new")
                put_returned.append(time.monotonic())
                time.sleep(0.5)  # a slow parse / a preempted reader
            return got

        monkeypatch.setattr(_fs, "read_file", slow_read)
        assert reader.get(NS, "k") == "old"  # read before the put: fine
        time.sleep(max(0.0, put_returned[0] + ttl + 0.05 - time.monotonic()))
        # "new" has been there longer than the TTL: "old" would be staler than cache_ttl_s.
        assert reader.get(NS, "k") == "new"
