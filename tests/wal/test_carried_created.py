"""Plain puts and batch() decide without reading shards; created_at is carried over and resolved later (issue 13).

A put with no ``if_version`` (not an update, not a CAS) logs its
``created_at`` as *carried over* (NaN in the frame) when the log holds nothing
unfolded of the key, instead of parsing the key's shard under the append lock.
The fold resolves it against the shard it rewrites, and a read answering from
the overlay resolves it against the shard once. These tests fail if a write
parses a shard to decide, or if created_at is lost or wrong anywhere: before
and after a fold, in another process, in the change feed, across an expiry
and across a fold that dies part way.
"""

from __future__ import annotations

import errno
import math
import multiprocessing as mp
import os
import threading
import time
from typing import Any

import pytest

import filemem
import filemem.admin
from filemem import _engine
from filemem._engine import _log as engine_log
from filemem._errors import StorageError
from filemem._wal import _format
from filemem._wal._overlay import Entry
from tests.helpers import reap, settle

NS = ("carry", "ns")


def _logged_ops(store: filemem.Store) -> list[_format.LogOp]:
    """Every op of every batch frame the log holds unfolded (as written, before any resolving)."""
    log = store._engine.log
    assert log is not None
    synced, folded = log.positions()
    ops: list[_format.LogOp] = []
    for frame in log.reader.scan(folded, synced).frames:
        if frame.kind == _format.BATCH:
            ops.extend(_format.decode_batch(frame.payload)[2])
    return ops


def _populate(path: str, n: int, **opts: Any) -> dict[str, float]:
    """``n`` records in the shards (folded), store closed; return each key's created_at."""
    with filemem.Store(path, **opts) as s:
        with s.batch() as b:
            for i in range(n):
                b.put(NS, f"k{i:05d}", {"i": i})
        settle(s)
        return {it.key: it.created_at for it in s.items(NS)}


def _hold_folds(s: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """No fold of ``s`` runs (the lock is always "busy") until the test undoes it."""
    monkeypatch.setattr(s._engine, "fold", lambda **_kw: False)


def test_puts_and_batches_parse_no_shard_to_decide(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    created = _populate(store_path, 2000, shard_max_bytes=4096)
    with filemem.Store(store_path, shard_max_bytes=4096, watch="off") as s:  # a new handle: nothing cached
        _hold_folds(s, monkeypatch)
        before = s._engine.counters["shard_parses"]
        with s.batch() as b:
            for i in range(0, 2000, 2):
                b.put(NS, f"k{i:05d}", {"i": i, "again": True})  # overwrites
            for i in range(500):
                b.put(NS, f"new{i:04d}", i)  # new keys
        for i in range(1, 200, 2):
            s.put(NS, f"k{i:05d}", "single")  # single puts, overwrites
        assert s._engine.counters["shard_parses"] == before, "a plain write parsed shards to decide"
        ops = _logged_ops(s)
        assert len(ops) == 1600 and all(math.isnan(op.created_at) for op in ops)
        # Served right before any fold: each read resolves against the shard once.
        for i in (0, 1, 2, 1998):
            got = s.get_item(NS, f"k{i:05d}")
            assert got is not None and got.created_at == created[f"k{i:05d}"]
        fresh = s.get_item(NS, "new0007")
        assert fresh is not None and fresh.created_at == fresh.updated_at
        items = {it.key: it for it in s.items(NS)}
        assert all(items[k].created_at == t for k, t in created.items())
        assert all(items[f"new{i:04d}"].created_at == items[f"new{i:04d}"].updated_at for i in range(500))


def test_created_at_survives_the_fold_and_reaches_the_shard_files(store_path: str) -> None:
    created = _populate(store_path, 300, shard_max_bytes=2048)
    with filemem.Store(store_path, shard_max_bytes=2048) as s:
        with s.batch() as b:
            for i in range(300):
                b.put(NS, f"k{i:05d}", {"i": -i})
        settle(s)
        assert s._engine.log is not None and s._engine.log.overlay.count == 0
        items = {it.key: it for it in s.items(NS)}
        assert {k: it.created_at for k, it in items.items()} == created
        assert all(it.updated_at > it.created_at for it in items.values())
    # Read back cold, from the files, by a handle that never saw the log.
    with filemem.Store(store_path, readonly=True) as r:
        assert {it.key: it.created_at for it in r.items(NS)} == created


def test_a_key_written_twice_before_the_fold_keeps_its_first_created_at(store_path: str) -> None:
    created = _populate(store_path, 10)
    with filemem.Store(store_path) as s:
        s.put(NS, "k00003", "one")  # carried (nothing of it in the log)
        s.put(NS, "k00003", "two")  # the log holds the first: decided from it
        with s.batch() as b:
            b.put(NS, "k00004", "a")
            b.put(NS, "k00004", "b")  # same batch: carried from the op before it
            b.delete(NS, "k00005")
            b.put(NS, "k00005", "reborn")  # after a delete in the batch: created now
        for when in ("before the fold", "after the fold"):
            three, four, five = (s.get_item(NS, f"k0000{i}") for i in (3, 4, 5))
            assert three is not None and three.value == "two" and three.created_at == created["k00003"], when
            assert four is not None and four.value == "b" and four.created_at == created["k00004"], when
            assert five is not None and five.created_at == five.updated_at > created["k00005"], when
            settle(s)


def test_created_at_is_not_carried_from_a_record_expired_at_the_put(store_path: str) -> None:
    with filemem.Store(store_path) as s:
        s.put(NS, "t", "old", ttl=0.05)
        settle(s)
        time.sleep(0.1)
        s.put(NS, "t", "new")  # the old record had expired: this is a new record
        for _ in range(2):
            got = s.get_item(NS, "t")
            assert got is not None and got.created_at == got.updated_at
            settle(s)


def test_a_record_that_expires_after_the_put_but_before_the_fold_still_gives_its_created_at(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold step that rewrites the shard after the old record expired keeps it for the carried put behind it.

    The fold drops expired records only if they expired before the oldest put
    it folds; dropping by the fold's own clock lost the old record here, and
    the put folded in the next step took its own time.
    """
    with filemem.Store(store_path, shard_max_bytes=1 << 20) as s:
        s.put(NS, "t", "old", ttl=0.4)
        s.put(NS, "other", "x")
        settle(s)
        first = s.get_item(NS, "t")
        assert first is not None
        log = s._engine.log
        assert log is not None
        with monkeypatch.context() as m:
            _hold_folds(s, m)
            s.put(NS, "other", "y")  # folded alone first, rewriting the shard that holds "t"
            s.put(NS, "t", "kept")  # live at the put: carries its created_at
            time.sleep(0.5)  # the old record has expired since
            got = s.get_item(NS, "t")
            assert got is not None and got.created_at == first.created_at
        monkeypatch.setattr(log, "fold_step_bytes", 1)  # a checkpoint after every batch
        assert s._engine.fold(wait=True, max_bytes=1)  # one step: only "other"
        assert log.fold_cut and log.unfolded_bytes() > 0
        got = s.get_item(NS, "t")
        assert got is not None and got.value == "kept" and got.created_at == first.created_at
        settle(s)
        got = s.get_item(NS, "t")
        assert got is not None and got.value == "kept" and got.created_at == first.created_at
    with filemem.Store(store_path, readonly=True) as r:
        got = r.get_item(NS, "t")
        assert got is not None and got.created_at == first.created_at


def test_the_fold_follows_carried_created_at_across_batches(store_path: str) -> None:
    """A log another writer made (docs/format.md): carried puts of a key in several batches, a delete between."""
    created = _populate(store_path, 3)
    with filemem.Store(store_path) as s:
        log = s._engine.log
        assert log is not None
        nan = math.nan

        def commit(ops: list[_format.LogOp]) -> None:
            def decide(latest: Any, first: int, now: float) -> Any:
                return (
                    ops,
                    [None] * len(ops),
                    [(op.namespace, op.key, Entry(first + i, None)) for i, op in enumerate(ops)],
                )

            log.commit(decide)
            time.sleep(0.01)

        put = _format.PUT
        commit(
            [
                _format.LogOp(NS, "k00000", put, "json", b'"a"', nan),
                _format.LogOp(NS, "k00001", put, "json", b'"a"', nan),
            ]
        )
        commit([_format.LogOp(NS, "k00000", put, "json", b'"b"', nan), _format.LogOp(NS, "k00001", _format.DELETE)])
        commit([_format.LogOp(NS, "k00001", put, "json", b'"c"', nan)])
        settle(s)
        zero, one = s.get_item(NS, "k00000"), s.get_item(NS, "k00001")
        assert zero is not None and zero.value == "b" and zero.created_at == created["k00000"]
        assert one is not None and one.value == "c" and one.created_at == one.updated_at > created["k00001"]


def test_the_change_feed_and_snapshots_see_the_carried_created_at(store_path: str) -> None:
    created = _populate(store_path, 50)
    with filemem.Store(store_path) as s:
        seen: list[filemem.Change] = []
        done = threading.Event()

        def on_change(change: filemem.Change) -> None:
            seen.append(change)
            done.set()

        sub = s.subscribe(on_change, namespace_prefix=NS)
        try:
            with s.batch() as b:
                for i in range(0, 50, 5):
                    b.put(NS, f"k{i:05d}", "feed")
                b.put(NS, "brand-new", 1)
            assert done.wait(10)
        finally:
            sub.close()
        items = [it for ch in seen for it in (ch.items or ()) if it is not None]
        assert len(items) == 11
        for it in items:
            if it.key == "brand-new":
                assert it.created_at == it.updated_at
            else:
                assert it.created_at == created[it.key]
        with s.snapshot() as snap:
            got = {it.key: it.created_at for it in snap.items(NS)}
        assert all(got[k] == t for k, t in created.items())


def _overwrite_in_child(path: str, keys: list[str], ready: Any, go: Any) -> None:
    with filemem.Store(path) as s:
        ready.set()
        go.wait(30)
        with s.batch() as b:
            for k in keys:
                b.put(NS, k, "from the child")
        os._exit(0)  # killed hard after the commit: its records stay unfolded in the log


def test_another_process_and_the_next_opener_resolve_created_at(store_path: str) -> None:
    created = _populate(store_path, 200)
    keys = [f"k{i:05d}" for i in range(0, 200, 3)]
    with filemem.Store(store_path) as reader:
        assert reader.get(NS, keys[0]) == {"i": 0}
        ctx = mp.get_context("spawn")
        ready, go = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_overwrite_in_child, args=(store_path, keys, ready, go))
        child.start()
        try:
            assert ready.wait(60)
            go.set()
            child.join(60)
            assert child.exitcode == 0
        finally:
            reap([child])
        for k in keys:  # from the child's frames, in this process's overlay
            got = reader.get_item(NS, k)
            assert got is not None and got.value == "from the child" and got.created_at == created[k]
    with filemem.Store(store_path) as s:  # recovery folds what the dead child left
        settle(s)
        assert {it.key: it.created_at for it in s.items(NS)} == created


def test_a_fold_that_dies_part_way_keeps_created_at(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    created = _populate(store_path, 400, shard_max_bytes=1024)
    with filemem.Store(store_path, shard_max_bytes=1024) as s:
        with monkeypatch.context() as m:
            _hold_folds(s, m)
            with s.batch() as b:
                for i in range(400):
                    b.put(NS, f"k{i:05d}", {"i": i, "v": 2})
        # The fold writes a few shards, then its process "dies" (an I/O error
        # out of the installer, the checkpoint not moved); the next fold redoes it.
        monkeypatch.setattr(engine_log, "_FOLD_SHARDS_PER_COMMIT", 2)
        real = engine_log.LogGlue._apply_shards
        calls = {"n": 0}

        def dies(self: Any, ops: list[Any]) -> list[Any]:
            calls["n"] += 1
            if calls["n"] == 4:
                raise OSError(errno.EIO, "the folder dies here")
            return real(self, ops)

        monkeypatch.setattr(engine_log.LogGlue, "_apply_shards", dies)
        with pytest.raises(StorageError):
            s._engine.fold(wait=True)
        assert calls["n"] == 4
        half = {it.key: it.created_at for it in s.items(NS)}  # some installed, some still in the log
        assert half == created
        monkeypatch.setattr(engine_log.LogGlue, "_apply_shards", real)
        settle(s)
        assert {it.key: it.created_at for it in s.items(NS)} == created
        assert s.check() == []


def test_conditional_writes_still_read_the_old_record(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _populate(store_path, 100, shard_max_bytes=2048)
    with filemem.Store(store_path, shard_max_bytes=2048, watch="off") as s:
        _hold_folds(s, monkeypatch)
        item = s.get_item(NS, "k00001")
        assert item is not None
        with pytest.raises(filemem.ConflictError):
            s.put(NS, "k00002", "x", if_version=12345)
        s.put(NS, "k00001", "y", if_version=item.version)
        assert s.update(NS, "k00003", lambda v: {"was": v}) == {"was": {"i": 3}}
        assert s.delete(NS, "k00004") and not s.delete(NS, "nope")
        ops = _logged_ops(s)
        assert ops and not any(math.isnan(op.created_at) for op in ops if op.kind == _format.PUT)


def test_format_1_stores_are_untouched(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine._marker, "NEW_STORE_FORMAT", 1)
    monkeypatch.setenv("FILEMEM_STORE_FORMAT", "1")
    path = str(tmp_path / "v1")
    with filemem.Store(path) as s:
        assert s._engine.log is None
        s.put(NS, "a", 1)
        first = s.get_item(NS, "a")
        s.put(NS, "a", 2)
        got = s.get_item(NS, "a")
        assert first is not None and got is not None and got.created_at == first.created_at
