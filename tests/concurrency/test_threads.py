"""Threads of one process share its caches and shard views: no lost updates, no missed reads."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

import filemem
from filemem import _engine, _locks
from tests.concurrency import _workers as w
from tests.helpers import reap, settle

# Regression (found by these tests): a thread that resolved a key to shard p before another thread of
# the same process split p found p gone, but view.refresh() said "nothing changed" because the splitter
# had already refreshed the View the threads share; so _attempt() re-created p as a new, empty shard
# (the write landed there, shadowed by p's leaves: lost, and check() reported interrupted-split), and
# read() / Snapshot._record() returned None for a key that exists.


def _threads(target: Any, n: int, timeout: float = 60) -> list[BaseException]:
    """Run ``target(i)`` in ``n`` threads; return what they raised."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"worker-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "threads hung"
    return errors


def test_threads_update_one_key_exactly(store_path: str, codec: str) -> None:
    t, m = 8, 200
    with filemem.Store(store_path, codec=codec, durability="flush") as s:
        errors = _threads(lambda i: [s.update("hot", "counter", w.incr) for _ in range(m)], t)
        assert errors == []
        assert s.get("hot", "counter") == t * m
        assert s.check() == []


def test_processes_and_threads_together(store_path: str, spawn_ctx: Any) -> None:
    """Child processes and threads of the parent update one key at the same time."""
    n, m = 3, 100
    keys = [[["mix"], "counter"]]
    res = [os.path.join(os.path.dirname(store_path), f"r{i}.json") for i in range(n)]
    filemem.Store(store_path).close()
    barrier = spawn_ctx.Barrier(n)
    procs = []
    try:
        for i in range(n):
            procs.append(
                w.start(
                    spawn_ctx, w.incr_child, (store_path, {"durability": "flush"}, keys, m, False, i, res[i], barrier)
                )
            )
        with filemem.Store(store_path, durability="flush") as s:
            errors = _threads(lambda i: [s.update("mix", "counter", w.incr) for _ in range(m)], 4)
        w.join_ok(procs, 90)
    finally:
        reap(procs, timeout=0)
    assert errors == []
    with filemem.Store(store_path) as s:
        assert s.get("mix", "counter") == n * m + 4 * m


def test_threads_mixed_updates_and_batches_while_shards_split(store_path: str) -> None:
    """6 threads update and batch-update 50 keys while 1 KiB shards split under them: exact counts."""
    t, m = 6, 150
    namespaces = [("thr", "a"), ("thr", "b")]
    keys = [(ns, f"key-{j:02d}") for ns in namespaces for j in range(25)]
    counts: list[Counter[tuple[tuple[str, ...], str]]] = [Counter() for _ in range(t)]
    with filemem.Store(store_path, durability="flush", shard_max_bytes=1024) as s:

        def work(i: int) -> None:
            rng = random.Random(i)
            for _ in range(m):
                if rng.random() < 0.2:
                    picked = rng.sample(keys, 2)
                    with s.batch() as b:
                        for ns, k in picked:
                            b.update(ns, k, w.incr_padded)
                    counts[i].update(picked)
                else:
                    ns, k = rng.choice(keys)
                    s.update(ns, k, w.incr_padded)
                    counts[i][(ns, k)] += 1

        assert _threads(work, t) == []
        settle(s)  # format 2: the shards grow and split at the fold
        assert s.stats()["splits"] >= 2
        expected = sum(counts, Counter())
        actual = {(ns, it.key): it.value["n"] for ns in namespaces for it in s.items(ns)}
        assert actual == dict(expected)
        assert s.check() == []


def _fill_root_shard(s: filemem.Store, ns: str) -> None:
    """Put records until the namespace's only shard is one record short of splitting."""
    path = os.path.join(s._engine.ns_dir((ns,)), "s.shard")
    i = 0
    while not os.path.exists(path) or os.path.getsize(path) < s._engine.shard_max_bytes - 150:
        s.put(ns, f"k{i}", {"i": i, "pad": w.PAD})
        i += 1
    assert s.stats()["splits"] == 0 and os.listdir(os.path.dirname(path)).count("s.shard") == 1


def _split_from_another_thread(s: filemem.Store, ns: str) -> None:
    t = threading.Thread(target=s.put, args=(ns, "trigger", {"i": -1, "pad": w.PAD}))
    t.start()
    t.join(30)
    assert s.stats()["splits"] == 1, "the other thread's put did not split the root shard"


@pytest.mark.store_format(1)  # a put splits the shard in format 1; format 2 splits in the fold
def test_write_that_waited_for_another_threads_split_is_not_lost(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: thread B resolves its key to the root shard; thread A splits the root before B locks it."""
    s = filemem.Store(store_path, shard_max_bytes=1024, durability="flush")
    try:
        _fill_root_shard(s, "ns")
        real = _locks.exclusive
        armed = [True]

        def exclusive(path: str, timeout_s: float, **kw: Any) -> _locks.Held:
            if armed[0]:  # B has resolved to the root and is about to lock it: A splits it first
                armed[0] = False
                _split_from_another_thread(s, "ns")
            return real(path, timeout_s, **kw)

        monkeypatch.setattr(_locks, "exclusive", exclusive)
        s.put("ns", "late", "value")
        monkeypatch.undo()
        assert s.get("ns", "late") == "value"
        assert s.check() == []  # not: interrupted-split on a re-created, shadowed s.shard
    finally:
        s.close()


@pytest.mark.store_format(1)  # a put splits the shard in format 1; format 2 splits in the fold
def test_read_racing_another_threads_split_finds_the_key(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic: a get resolves to the root shard; another thread splits the root before it is read."""
    s = filemem.Store(store_path, shard_max_bytes=1024, durability="flush")
    try:
        _fill_root_shard(s, "ns")
        real = _engine.Engine.load
        armed = [True]

        def load(self: Any, path: str, prefix: str | None, **kw: Any) -> Any:
            if armed[0] and path.endswith(os.sep + "s.shard"):
                armed[0] = False
                _split_from_another_thread(s, "ns")
            return real(self, path, prefix, **kw)

        monkeypatch.setattr(_engine.Engine, "load", load)
        got = s.get("ns", "k0")
        monkeypatch.undo()
        assert got == {"i": 0, "pad": w.PAD}
    finally:
        s.close()


@pytest.mark.store_format(1)  # a put splits the shard in format 1; format 2 splits in the fold (next test)
def test_snapshot_read_racing_another_threads_split_finds_the_key(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: a snapshot resolves a key to the root shard; another thread splits it before it is locked."""
    s = filemem.Store(store_path, shard_max_bytes=1024, durability="flush")
    try:
        _fill_root_shard(s, "ns")
        real = _engine.Engine.snapshot_lock
        armed = [True]

        def snapshot_lock(self: Any, view: Any, prefix: str, first: bool) -> _locks.Held:
            if armed[0]:
                armed[0] = False
                _split_from_another_thread(s, "ns")
            return real(self, view, prefix, first)

        monkeypatch.setattr(_engine.Engine, "snapshot_lock", snapshot_lock)
        with s.snapshot() as snap:
            got = snap.get("ns", "k0")
        monkeypatch.undo()
        assert got == {"i": 0, "pad": w.PAD}
    finally:
        s.close()


@pytest.mark.store_format(2)
def test_snapshot_holds_off_another_threads_fold_without_deadlock(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Format 2: puts only log, the fold splits; another thread's fold under a snapshot neither waits nor splits.

    Deterministic: the snapshot resolves a key to the root shard, then another
    thread writes the record that would split it and asks for a fold. The fold
    is refused at once (the snapshot of this process holds the fold lock; it
    does not wait out the lock timeout against it), the snapshot reads its key
    from the unsplit shard, and the split happens at the next fold after.
    """
    s = filemem.Store(store_path, shard_max_bytes=1024, durability="flush", lock_timeout_s=60)
    try:
        path = os.path.join(s._engine.ns_dir(("ns",)), "s.shard")
        i = 0
        while not os.path.exists(path) or os.path.getsize(path) < s._engine.shard_max_bytes - 150:
            s.put("ns", f"k{i}", {"i": i, "pad": w.PAD})
            filemem.admin.fold(s)
            i += 1
        assert s.stats()["splits"] == 0
        real = _engine.Engine.snapshot_lock
        armed = [True]
        took: list[float] = []

        def put_and_fold() -> None:
            t0 = time.monotonic()
            s.put("ns", "trigger", {"i": -1, "pad": w.PAD})
            filemem.admin.fold(s)
            took.append(time.monotonic() - t0)

        def snapshot_lock(self: Any, view: Any, prefix: str, first: bool) -> _locks.Held:
            if armed[0]:
                armed[0] = False
                t = threading.Thread(target=put_and_fold)
                t.start()
                t.join(120)
                assert not t.is_alive(), "the other thread's fold deadlocked against the snapshot"
            return real(self, view, prefix, first)

        monkeypatch.setattr(_engine.Engine, "snapshot_lock", snapshot_lock)
        with s.snapshot() as snap:
            got = snap.get("ns", "k0")
            assert snap.get("ns", "trigger") is None  # written after the snapshot's position
        monkeypatch.undo()
        assert got == {"i": 0, "pad": w.PAD}
        assert took and took[0] < 30, took  # refused at once, not after the 60 s lock timeout
        assert s.stats()["splits"] == 0, "a fold ran under the snapshot's pin"
        filemem.admin.fold(s)
        assert s.stats()["splits"] == 1
        assert s.get("ns", "k0") == {"i": 0, "pad": w.PAD}
        assert s.get("ns", "trigger") == {"i": -1, "pad": w.PAD}
    finally:
        s.close()
