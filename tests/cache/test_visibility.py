"""Cross-process visibility of the "cached" and "strict" levels, own writes, polling fallback.

The writer and the reader are different processes (``Peer`` is a spawned
child with its own Store), or at least different Store objects, which have
separate caches exactly like separate processes do.
"""

from __future__ import annotations

import errno
import os
import pathlib
import sys
import threading
import time

import pytest

import filemem
from filemem._watch import FileMemWatchWarning, _inotify

from ._peer import Peer
from ._util import LONG_TTL, make_store, new_threads, precreate, spin_get, wait_until

NS = ("agent", "facts")

# ---------------------------------------------------------------- other processes' writes


@pytest.mark.store_format(1)  # format 1: seen through watcher invalidations (format 2: the commit counter, tests/wal)
@pytest.mark.parametrize("watch", ["auto", "native", "polling"])
def test_other_process_write_seen_well_inside_long_ttl(store_path: str, watch: str) -> None:
    """B (cached, TTL 30 s) sees A's writes in well under a second: only events can explain it."""
    rounds = 5
    with make_store(store_path, watch="off") as writer:
        writer.put(NS, "sky", "v0")
        with Peer(store_path, cache_ttl_s=LONG_TTL, watch=watch, poll_interval_s=0.05) as reader:
            assert reader.call("get", NS, "sky", None) == "v0"  # caches it, starts the watcher
            latencies = []
            for i in range(1, rounds + 1):
                reader.send("spin", NS, "sky", f"v{i}", 20.0)
                # B's first read of the round answers from its cache: the old value.
                assert reader.recv() == ("started", f"v{i - 1}")
                writer.put(NS, "sky", f"v{i}")
                put_returned = time.monotonic()
                seen = reader.result()
                assert seen["seen"], seen
                latencies.append(seen["end"] - put_returned)
            stats = reader.call("stats")
    assert stats["watcher"]["backend"] == ("polling" if watch == "polling" else "inotify")
    assert stats["cache"]["invalidations"] >= rounds
    # Each new value showed up within seconds: nowhere near the 30 s TTL.
    assert max(latencies) < 5.0, latencies


@pytest.mark.store_format(1)  # format 1: stale inside the TTL by design; format 2 is never stale
def test_watch_off_sees_other_process_write_after_ttl_and_not_before(store_path: str) -> None:
    """With no watcher, freshness comes from the TTL alone: old value inside it, new value once it passes."""
    ttl = 0.4
    with make_store(store_path, watch="off", cache_ttl_s=ttl) as reader:
        reader.put(NS, "k", 0)
        with Peer(store_path, watch="off") as writer:
            for attempt in range(1, 8):
                t0 = time.monotonic()
                # A strict read revalidates the entry: fresh until at least t0 + ttl.
                assert reader.get(NS, "k", consistency="strict") == attempt - 1
                warm_end = time.monotonic()
                writer.call("put", NS, "k", attempt)
                cached = reader.get(NS, "k")
                if time.monotonic() - t0 < ttl:
                    break  # a controlled window: the whole check ran inside the TTL
            else:
                pytest.fail("could not write and read back within one TTL in 7 attempts")
            assert cached == attempt - 1  # inside the TTL, no watcher: the cache answers, old value
            while True:
                start = time.monotonic()
                value = reader.get(NS, "k")
                end = time.monotonic()
                if value == attempt:
                    break
                assert value == attempt - 1
                assert end < warm_end + ttl + 30, "the new value never showed up"
            # Not before the TTL: any read that ended before t0 + ttl had a fresh entry.
            assert end >= t0 + ttl
            # And as soon as it passed (a spinning reader's next read, with room for a loaded machine).
            assert start <= warm_end + ttl + 1.0, start - warm_end
        assert reader.stats()["watcher"]["backend"] == "none"


@pytest.mark.store_format(1)  # format 1: cached reads stale inside the TTL by design
def test_strict_sees_other_process_write_at_once(store_path: str) -> None:
    """consistency="strict", store-level or per call, sees a write that returned before the get started."""
    before = set(threading.enumerate())
    with (
        make_store(store_path, watch="off") as cached,
        make_store(store_path, consistency="strict") as strict,
    ):
        cached.put(NS, "k", 0)
        assert cached.get(NS, "k") == 0
        assert strict.get(NS, "k") == 0
        with Peer(store_path, watch="off") as writer:
            for i in range(1, 6):
                writer.call("put", NS, "k", i)
                assert strict.get(NS, "k") == i  # store-level strict
                assert strict.get_item(NS, "k").value == i
                assert cached.get(NS, "k") == i - 1  # cached, TTL 30 s, no watcher: the old value
                assert cached.get(NS, "k", consistency="strict") == i  # per call
                assert cached.get(NS, "k") == i  # the strict read refreshed the cache too
                assert cached.get_item(NS, "k", consistency="strict").value == i
        # A strict store never needs a watcher.
        assert strict.stats()["watcher"]["backend"] == "none"
        assert not new_threads(before)


def test_invalid_consistency_is_refused(store_path: str) -> None:
    with make_store(store_path) as store, pytest.raises(filemem.InvalidValueError):
        store.get(NS, "k", consistency="eventual")  # type: ignore[arg-type]
    with pytest.raises(filemem.InvalidValueError):
        filemem.Store(store_path, consistency="eventual")  # type: ignore[arg-type]
    with pytest.raises(filemem.InvalidValueError):
        filemem.Store(store_path, watch="sometimes")  # type: ignore[arg-type]


@pytest.mark.store_format(1)  # format 1: splits at the put; format 2 splits at the fold
@pytest.mark.parametrize("watch", ["auto", "polling"])
def test_every_kind_of_change_by_another_store_is_seen_inside_long_ttl(store_path: str, watch: str) -> None:
    """New namespaces (new directories), new keys in cached shards, deletes, and splits, all with TTL 30 s."""
    fresh_ns = ("brandnew",)  # one new directory (nested ones: see the race test below)
    with (
        make_store(store_path, watch=watch, poll_interval_s=0.02, shard_max_bytes=2048) as reader,
        make_store(store_path, watch="off", shard_max_bytes=2048) as writer,
    ):
        writer.put(NS, "a", 1)
        assert reader.get(NS, "a") == 1
        assert reader.get(NS, "b") is None  # absent key of a cached shard
        assert reader.get(fresh_ns, "k") is None  # absent namespace: no directory yet
        assert reader.get(fresh_ns, "k") is None
        writer.put(fresh_ns, "k", "here")
        spin_get(reader, fresh_ns, "k", "here")
        writer.put(NS, "b", 2)
        spin_get(reader, NS, "b", 2)
        writer.delete(NS, "a")
        spin_get(reader, NS, "a", None)
        # Splits: the cached shard is flagged, leaves appear, the parent vanishes.
        for i in range(80):
            writer.put(NS, f"k{i}", "x" * 60)
        assert writer.stats()["splits"] > 0
        spin_get(reader, NS, "k79", "x" * 60)
        for i in range(80):
            assert spin_get(reader, NS, f"k{i}", "x" * 60) < 10
        # The namespace spelled three ways shares one cache entry: all see the next change.
        writer.put(NS, "b", 3)
        for spelled in (NS, "agent/facts", ["agent", "facts"]):
            spin_get(reader, spelled, "b", 3)


@pytest.mark.store_format(1)  # format 1: the put itself splits the shard
def test_a_split_parent_the_watcher_never_saw_is_not_served_from_the_cache(store_path: str) -> None:
    """A shard the polling watcher never saw, split away: its cached entry must not stay fresh.

    The polling watcher looks every interval; a shard created and split away
    between two of its rounds (a loaded machine) is never reported deleted.
    Only its leaves are reported, as new. The reader's cached entry for the
    parent, fresh for the TTL, kept answering the hot path with the value
    before the split's put (flaky under load in the test above, 2026-12-04).
    """
    with (
        make_store(store_path, watch="polling", poll_interval_s=3600, shard_max_bytes=2048) as reader,
        make_store(store_path, watch="off", shard_max_bytes=2048) as writer,
    ):
        assert reader.get(("elsewhere",), "b") is None  # starts the watcher: its first look sees no shard
        watcher = reader._backend.fresh._watcher
        assert watcher is not None and watcher.backend == "polling"
        writer.put(NS, "b", "old")
        for i in range(10):
            writer.put(NS, f"k{i}", "x" * 60)
        assert writer.stats()["splits"] == 0
        assert reader.get(NS, "b") == "old"  # a miss: reads the one shard and caches it, fresh
        assert reader.get(NS, "b") == "old"  # the hot path
        splits = 0
        value = "new" + "y" * 60
        for i in range(10, 200):  # the put that splits the shard writes b's new value
            writer.put(NS, f"k{i}", "x" * 60)
            if writer.stats()["splits"] > splits:
                break
        writer.put(NS, "b", value)
        assert writer.stats()["splits"] > 0
        parent = os.path.join(store_path, "ns", "agent", "facts", "s.shard")
        assert not os.path.exists(parent)
        watcher._scan(report=True)  # one round: it never saw s.shard, only the leaves
        assert not any(p.endswith(os.sep + "s.shard") for p in watcher._files)
        assert reader.get(NS, "b") == value


def test_directory_created_while_its_parent_is_being_watched_is_watched(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer's mkdir of ns/agent/facts lands after the watcher listed ns/agent, before it watched it.

    Happens naturally (mostly under load) whenever a writer creates nested
    namespaces while a reader's watcher handles the new parent directory; the
    hook only makes the interleaving certain.
    """
    nested = ("agent", "facts")
    raced: list[str] = []
    real_watch = _inotify.InotifyWatcher._watch

    def racing_watch(self: _inotify.InotifyWatcher, directory: str) -> None:
        if os.path.basename(directory) == "agent" and not raced:
            os.mkdir(os.path.join(directory, "facts"), 0o700)  # what the writer's ensure_dir does
            raced.append(directory)
        real_watch(self, directory)

    with make_store(store_path) as reader, make_store(store_path, watch="off") as writer:
        precreate(writer, ("seed",))
        assert reader.get(("seed",), "_seed") == 0  # the watcher runs
        monkeypatch.setattr(_inotify.InotifyWatcher, "_watch", racing_watch)
        writer.put(("agent",), "k", 0)  # creates ns/agent: the watcher lists it, then watches it
        wait_until(lambda: raced)
        writer.put(nested, "k", 1)
        assert reader.get(nested, "k") == 1  # a first read: from the file
        writer.put(nested, "k", 2)
        assert spin_get(reader, nested, "k", 2, timeout=5.0) < 5.0  # TTL 30 s: only an event can do it


# ---------------------------------------------------------------- own writes


@pytest.mark.parametrize("watch", ["auto", "off"])
def test_process_reads_its_own_writes_at_once(store_path: str, watch: str) -> None:
    """Cached mode, TTL 30 s: every kind of write is visible to the writer's next read, events or not."""
    with make_store(store_path, watch=watch) as store:
        for i in range(40):
            store.get(NS, "k")
            store.get(NS, "k")  # fresh (and hot) before the write
            store.put(NS, "k", {"i": i})
            assert store.get(NS, "k") == {"i": i}
            assert store.get_item(NS, "k").value == {"i": i}
            assert store.mapping(NS)["k"] == {"i": i}
        assert store.delete(NS, "k") is True
        assert store.get(NS, "k") is None
        assert (NS, "k") not in store
        for n in range(1, 4):
            assert store.update(NS, "n", lambda v: (v or 0) + 1) == n
            assert store.get(NS, "n") == n
        other = ("agent", "other")
        store.get(other, "a")  # an absent entry, fresh
        with store.batch() as b:
            b.put(NS, "n", 100)
            b.put(other, "a", "x")
            b.delete(NS, "missing")
        assert store.get(NS, "n") == 100
        assert store.get(other, "a") == "x"
        store.put(NS, "short", 1, ttl=0.05)
        assert store.get(NS, "short") == 1
        time.sleep(0.1)
        assert store.get(NS, "short") is None  # a record's own TTL still applies to cached reads


@pytest.mark.store_format(1)  # format 1: splits at the put
def test_own_writes_visible_through_splits(store_path: str) -> None:
    """Writes that split shards (new files, a vanished parent) are read back at once, no watcher."""
    with make_store(store_path, watch="off", shard_max_bytes=1024) as store:
        for i in range(150):
            store.put(NS, f"k{i}", "x" * 40 + str(i))
            assert store.get(NS, f"k{i}") == "x" * 40 + str(i)
            j = i // 2
            assert store.get(NS, f"k{j}") == "x" * 40 + str(j)
        assert store.stats()["splits"] > 0
        for i in range(150):
            assert store.get(NS, f"k{i}") == "x" * 40 + str(i)


@pytest.mark.store_format(1)  # format 1: a stale cache inside the TTL by design
def test_writes_work_on_current_files_not_fresh_cache(store_path: str) -> None:
    """update, if_version and snapshots never trust a fresh-but-stale cache entry."""
    with make_store(store_path, watch="off") as a, make_store(store_path, watch="off") as b:
        a.put(NS, "n", 1)
        assert a.get(NS, "n") == 1
        b.put(NS, "n", 10)
        assert a.get(NS, "n") == 1  # a's cache is stale, well inside its TTL
        assert a.update(NS, "n", lambda v: v + 1) == 11  # no lost update
        assert a.get(NS, "n") == 11
        version = a.get_item(NS, "n").version
        b.put(NS, "n", 20)
        with pytest.raises(filemem.ConflictError):
            a.put(NS, "n", 0, if_version=version)
        b.put(NS, "n", 30)
        with a.snapshot() as snap:
            assert snap.get(NS, "n") == 30
        assert sorted(it.value for it in a.items(NS)) == [30]  # listings read the files too


def test_cached_values_are_copies(store_path: str) -> None:
    """Mutating what a cached get returned never changes what the next get returns."""
    with make_store(store_path) as store:
        store.put(NS, "k", {"tags": ["a"], "n": 1})
        for _ in range(3):
            got = store.get(NS, "k")
            assert got == {"tags": ["a"], "n": 1}
            got["tags"].append("b")
            got["n"] = 2


# ---------------------------------------------------------------- polling fallback


def _failing_start(self: object) -> None:
    raise _inotify.WatchLimitError(errno.ENOSPC, "inotify watch limit reached")


@pytest.mark.parametrize("watch", ["auto", "native"])
def test_native_failure_falls_back_to_polling(store_path: str, watch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """inotify refusing to start: a FileMemWatchWarning, polling, and reads stay correct (never an error)."""
    monkeypatch.setattr(_inotify.InotifyWatcher, "start", _failing_start)
    with (
        make_store(store_path, watch="off") as writer,
        make_store(store_path, watch=watch, poll_interval_s=0.02) as reader,
    ):
        writer.put(NS, "k", 0)
        with pytest.warns(FileMemWatchWarning, match="polling"):
            assert reader.get(NS, "k") == 0
        assert reader.stats()["watcher"]["backend"] == "polling"
        assert reader.get(NS, "k") == 0  # no second warning (filterwarnings=error would raise it)
        writer.put(NS, "k", 1)
        assert spin_get(reader, NS, "k", 1, timeout=10.0) < 10.0  # TTL is 30 s: the poller did it


def test_native_failure_on_subscribe_falls_back_to_polling(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_inotify.InotifyWatcher, "start", _failing_start)
    got: list[filemem.Change] = []
    with make_store(store_path, poll_interval_s=0.02) as reader, make_store(store_path, watch="off") as writer:
        with pytest.warns(FileMemWatchWarning):
            sub = reader.subscribe(got.append, namespace_prefix=NS)
        writer.put(NS, "k", 1)
        deadline = time.monotonic() + 10
        while not any(c.kind == "write" for c in got) and time.monotonic() < deadline:
            time.sleep(0.01)
        sub.close()
    assert any(c.kind == "write" and c.namespace == NS for c in got)


def test_no_inotify_instance_falls_back_to_polling(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real failure path: inotify_init failing (EMFILE: instance limit) becomes a warning and polling."""

    def no_instance() -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_inotify, "InotifyFD", no_instance)
    with make_store(store_path) as reader:
        reader.put(NS, "k", 0)
        with pytest.warns(FileMemWatchWarning, match="max_user_instances.*polling"):
            assert reader.get(NS, "k") == 0
        assert reader.stats()["watcher"]["backend"] == "polling"


def test_watch_limit_midway_falls_back_without_leaking(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """add_watch failing (ENOSPC) after the inotify thread started: it is stopped, polling takes over."""
    real_add = _inotify.InotifyFD.add_callback
    calls = []

    def add_callback(self: _inotify.InotifyFD, *args: object, **kwargs: object) -> object:
        calls.append(args[0])
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_add(self, *args, **kwargs)  # type: ignore[arg-type]

    with make_store(store_path, watch="off") as writer:
        for ns in [("a",), ("b",), ("c", "d")]:
            writer.put(ns, "k", 0)
        monkeypatch.setattr(_inotify.InotifyFD, "add_callback", add_callback)
        with make_store(store_path, poll_interval_s=0.02) as reader:
            with pytest.warns(FileMemWatchWarning, match="max_user_watches.*polling"):
                assert reader.get(("c", "d"), "k") == 0
            assert reader.stats()["watcher"]["backend"] == "polling"
            # The reader thread (an InotifyFD) and watchdog 7.1.1's dispatcher.
            inotify = [t for t in threading.enumerate() if "Inotify" in f"{type(t).__name__} {t.name}"]
            assert inotify == []
            writer.put(("c", "d"), "k", 1)
            spin_get(reader, ("c", "d"), "k", 1, timeout=10.0)
    assert len(calls) >= 2


class _RecordingSink:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def shard_changed(self, directory: str, name: str, kind: str) -> None:
        self.calls.append("shard_changed")

    def log_changed(self) -> None:
        self.calls.append("log_changed")

    def events_lost(self) -> None:
        self.calls.append("events_lost")


@pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux only")
def test_an_inotify_queue_overflow_reaches_the_sink_once(tmp_path: pathlib.Path) -> None:
    # watchdog's real dispatch of an overflow (IN_Q_OVERFLOW, wd -1): it calls
    # on_queue_overflow on every callback, then on_events_lost; the store
    # must hear "events lost" exactly once, from the second hook.
    sink = _RecordingSink()
    watcher = _inotify.InotifyWatcher(str(tmp_path), sink)
    watcher.start()
    try:
        assert watcher._fd is not None
        overflow = _inotify.InotifyEvent(-1, _inotify.InotifyConstants.IN_Q_OVERFLOW, 0, b"")
        watcher._fd.handle_event(overflow)
        assert sink.calls == ["events_lost"]
        assert watcher.overflows == 1
    finally:
        watcher.stop()


def _inotify_fds() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if "inotify" in os.readlink(f"/proc/self/fd/{name}"):
                count += 1
        except OSError:
            pass  # closed while we looked (the listing's own descriptor)
    return count


@pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux only")
def test_a_stopped_watcher_leaves_no_inotify_instance_open(tmp_path: pathlib.Path) -> None:
    # watchdog's reader thread closes the instance only if it is inside a read
    # when asked to stop; stopped at once after start (no read begun) it left
    # it open, and 128 leaked instances made every later store fall back to
    # polling ("inotify instance limit reached").
    before = _inotify_fds()
    for _ in range(30):
        watcher = _inotify.InotifyWatcher(str(tmp_path), _RecordingSink())
        watcher.start()
        watcher.stop()
    assert _inotify_fds() == before
