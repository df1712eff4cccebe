"""Injected faults on a v2 store: the log takes the write, the fold writes the shards.

Clear errors, nothing served wrong.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

import filemem
from filemem import CorruptShardError, LockTimeout, StorageError, _fs
from filemem._engine import _log as engine_log
from filemem._engine import _split as engine_split
from tests.helpers import reap, settle

NS = ("agent", "facts")


@pytest.fixture(autouse=True)
def _no_background_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folds run only where the test says (settle): an armed fault must hit the fold the test watches."""
    monkeypatch.setattr(engine_log, "FOLD_IDLE_S", 3600.0)


def shard_files(store: filemem.Store, ns: tuple[str, ...] = NS) -> list[str]:
    d = store._engine.ns_dir(ns)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".shard"))


def temp_files(root: str) -> list[str]:
    return [os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if _fs.TEMP_MARK in f]


def test_fsync_failure_raises_and_keeps_old_value(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(NS, "k", "old")

    def bad_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", bad_fsync)
    monkeypatch.setattr(os, "fdatasync", bad_fsync)  # files are synced with fdatasync where it exists
    with pytest.raises(StorageError) as err:
        store.put(NS, "k", "new")
    assert err.value.errno == errno.EIO and isinstance(err.value, OSError)
    monkeypatch.undo()
    assert store.get(NS, "k") == "old"
    assert temp_files(store.path) == []
    assert store.check() == []


def test_disk_full_raises_and_changes_nothing(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(NS, "k", "old")

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_at(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    monkeypatch.setattr(os, "pwrite", full_at)  # the log appends with pwrite
    monkeypatch.setattr(os, "posix_fallocate", no_room)  # and reserves its space ahead
    with pytest.raises(StorageError, match="disk full"):
        store.put(NS, "k", "new")
    with pytest.raises(StorageError), store.batch() as b:
        b.put(NS, "k", "new")
        b.put(("other",), "k", "new")
    monkeypatch.undo()
    assert store.get(NS, "k") == "old" and store.get(("other",), "k") is None
    assert temp_files(store.path) == []
    assert store.check() == []


def test_directory_fsync_failure_is_reported(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(NS, "k", "old")

    def bad_dir_fsync(path: str) -> None:
        raise StorageError("could not fsync directory", errno=errno.EIO, path=path)

    monkeypatch.setattr(_fs, "fsync_dir", bad_dir_fsync)
    store.put(NS, "k", "new")  # the log needs no directory fsync for an append
    with pytest.raises(StorageError):
        settle(store)  # the fold renames shards: a failed directory fsync fails it, never a success
    assert store.get(NS, "k") == "new"  # the log still holds the record
    monkeypatch.undo()
    settle(store)
    with filemem.Store(store.path) as fresh:
        assert fresh.get(NS, "k") == "new"
        assert fresh.check() == []


@pytest.mark.parametrize("damage", ["flip-body", "flip-header", "truncate", "empty"])
def test_damaged_shard_is_never_served(store: filemem.Store, damage: str) -> None:
    store.put(NS, "k", {"secret": "value-0123456789"})
    settle(store)
    (path,) = shard_files(store)
    data = bytearray(Path(path).read_bytes())
    if damage == "flip-body":
        data[-10] ^= 0x01
    elif damage == "flip-header":
        data[data.index(b'"generation":') + 13] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 7]
    else:
        data = bytearray()
    with open(path, "wb") as fh:
        fh.write(data)
    with filemem.Store(store.path) as fresh:
        with pytest.raises(CorruptShardError) as err:
            fresh.get(NS, "k")
        assert err.value.path == path and path in str(err.value)
        with pytest.raises(CorruptShardError):
            fresh.update(NS, "k", lambda v: 2)  # a write that reads the old record never builds on a damaged one
        # A plain put reads nothing (issue 13): it is logged, and its created_at
        # carried over from the damaged record cannot be served either.
        fresh.put(NS, "k", 2)
        with pytest.raises(CorruptShardError):
            fresh.get(NS, "k")
        findings = fresh.check()
        assert [f.code for f in findings] == ["corrupt-shard"]
        fixed = fresh.check(fix=True)
        assert fixed[0].fixed and "quarantine" in fixed[0].action
        assert fresh.check() == []
        # The old record is lost, and said so; the acknowledged put is kept,
        # created when it was made (nothing older to carry over).
        got = fresh.get_item(NS, "k")
        assert got is not None and got.value == 2 and got.created_at == got.updated_at
        fresh.delete(NS, "k")
        assert fresh.get(NS, "k") is None
        fresh.put(NS, "k", "again")
        assert fresh.get(NS, "k") == "again"
    assert os.listdir(os.path.join(store.path, "quarantine"))


def test_leftover_temp_files_are_removed(store: filemem.Store) -> None:
    store.put(NS, "k", 1)
    settle(store)
    (path,) = shard_files(store)
    leftover = path + _fs.TEMP_MARK + "4999999-dead"
    Path(leftover).write_bytes(b"half a shard")
    findings = store.check()
    assert [f.code for f in findings] == ["temp-file"]
    assert store.check(fix=True)[0].fixed
    assert not os.path.exists(leftover)
    assert store.check() == []
    assert store.get(NS, "k") == 1


def test_foreign_files_are_reported_not_touched(store: filemem.Store) -> None:
    store.put(NS, "k", 1)
    settle(store)
    stray = os.path.join(store._engine.ns_dir(NS), "notes.txt")
    Path(stray).write_text("mine")
    findings = store.check(fix=True)
    assert [(f.code, f.fixed) for f in findings] == [("foreign-file", False)]
    assert Path(stray).read_text() == "mine"


def _crash_after_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the first shard rename after a batch's commit point 'kill' the writer."""
    real = _fs.replace

    def replace(src: str, dst: str) -> None:
        if dst.endswith(".batch"):
            real(src, dst)
            return
        raise KeyboardInterrupt("simulated crash between commit and apply")

    monkeypatch.setattr(_fs, "replace", replace)


def test_batch_interrupted_after_commit_rolls_forward(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold writes shards of several namespaces as one batch: killed after its commit point, it rolls forward."""
    store.put(("a",), "x", 0)
    store.put(("b",), "y", 0)
    settle(store)
    with store.batch() as b:  # one log frame: acknowledged once synced
        b.put(("a",), "x", 1)
        b.put(("b",), "y", 1)
    _crash_after_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        settle(store)
    monkeypatch.undo()
    # The intent is on disk and its owner is "dead" (its lock was released).
    assert [f.code for f in store.check()] == ["unfinished-batch"]
    with filemem.Store(store.path) as fresh:  # opening a store recovers
        assert fresh.get(("a",), "x") == 1 and fresh.get(("b",), "y") == 1
        assert fresh.check() == []


def test_batch_interrupted_after_commit_fixed_by_check(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    with store.batch() as b:
        b.put(("a",), "x", 1)
        b.put(("b",), "y", 1)
    _crash_after_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        settle(store)
    monkeypatch.undo()
    findings = store.check(fix=True)
    assert [(f.code, f.fixed) for f in findings] == [("unfinished-batch", True)]
    assert store.get(("a",), "x") == 1 and store.get(("b",), "y") == 1
    assert store.check() == []


def test_batch_interrupted_before_commit_is_rolled_back(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(("a",), "x", 0)
    real = _fs.write_fd

    def die(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("crash while writing the intent")

    settle(store)
    with store.batch() as b:
        b.put(("a",), "x", 1)
        b.put(("b",), "y", 1)
    monkeypatch.setattr(_fs, "write_fd", die)
    with pytest.raises(KeyboardInterrupt):
        settle(store)  # the fold dies before its batch commits: the shards keep the old records
    monkeypatch.setattr(_fs, "write_fd", real)
    on_disk = filemem.Store(store.path, readonly=True)
    try:
        # The log still holds the batch, so every reader sees it whole.
        assert on_disk.get(("a",), "x") == 1 and on_disk.get(("b",), "y") == 1
    finally:
        on_disk.close()
    assert temp_files(store.path) == []
    assert store.check() == []  # folds again, completely
    assert store.get(("a",), "x") == 1 and store.get(("b",), "y") == 1


def test_torn_batch_intent(store: filemem.Store) -> None:
    os.makedirs(os.path.join(store.path, "batches"), exist_ok=True)
    torn = os.path.join(store.path, "batches", "deadbeef.batch")
    Path(torn).write_bytes(b'0000\n{"renames": [[')
    assert [f.code for f in store.check()] == ["torn-batch"]
    assert store.check(fix=True)[0].fixed
    assert store.check() == []


def test_interrupted_split_is_finished(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = filemem.Store(store_path, shard_max_bytes=2048, durability="flush")
    real_unlink = os.unlink
    state = {"armed": True}

    def crash_unlink(path: str, *a: object, **k: object) -> None:
        if state["armed"] and path.endswith(".shard"):
            state["armed"] = False
            raise KeyboardInterrupt("crash before the parent shard is removed")
        real_unlink(path)

    for i in range(200):
        s.put(NS, f"k{i:03d}", "v" * 40)
    monkeypatch.setattr(engine_split.os, "unlink", crash_unlink)
    with pytest.raises(KeyboardInterrupt):
        settle(s)  # the fold splits the grown shard and dies before removing the parent
    monkeypatch.undo()
    view = s._engine.view(NS)
    view.refresh()
    assert view.internal  # a flagged parent with leaves below it: the interrupted split
    with filemem.Store(store_path, readonly=True) as ro:
        assert [f.code for f in ro.check()] == ["interrupted-split"]
    with filemem.Store(store_path) as fresh:
        assert all(fresh.get(NS, f"k{j:03d}") == "v" * 40 for j in range(200))
        assert [f.code for f in fresh.check()] == ["interrupted-split"]
        assert fresh.check(fix=True)[0].fixed
        assert fresh.check() == []
        assert len(fresh.keys(NS)) == 200
    s.close()


def test_interrupted_split_is_finished_by_the_next_writer(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = filemem.Store(store_path, shard_max_bytes=2048, durability="flush")
    real_unlink = os.unlink
    state = {"armed": True}

    def crash_unlink(path: str, *a: object, **k: object) -> None:
        if state["armed"] and path.endswith(".shard"):
            state["armed"] = False
            raise KeyboardInterrupt
        real_unlink(path)

    for i in range(200):
        s.put(NS, f"k{i:03d}", "v" * 40)
    monkeypatch.setattr(engine_split.os, "unlink", crash_unlink)
    with pytest.raises(KeyboardInterrupt):
        settle(s)
    monkeypatch.undo()
    with filemem.Store(store_path, shard_max_bytes=2048) as w:
        for j in range(200):
            w.put(NS, f"k{j:03d}", j)
        assert [w.get(NS, f"k{j:03d}") for j in range(200)] == list(range(200))
        settle(w)  # the next fold writing into the range finishes the split
        assert w.check() == []
    s.close()


def _hold_lock(path: str, seconds: float, ready: object) -> None:
    from filemem import _locks

    with _locks.exclusive(path, 5):
        ready.set()  # type: ignore[attr-defined]
        time.sleep(seconds)


def test_lock_timeout_names_the_file(store_path: str, spawn_ctx: object) -> None:
    with filemem.Store(store_path, lock_timeout_s=0.3) as s:
        s.put(NS, "k", 1)
        lock = os.path.join(s.path, "wal", "append.lock")  # every write appends under it
        ready = spawn_ctx.Event()  # type: ignore[attr-defined]
        p = spawn_ctx.Process(target=_hold_lock, args=(lock, 3.0, ready))  # type: ignore[attr-defined]
        p.start()
        try:
            assert ready.wait(20)
            t0 = time.monotonic()
            with pytest.raises(LockTimeout) as err:
                s.put(NS, "k", 2)
            assert time.monotonic() - t0 < 2.5
            assert err.value.path == lock and lock in str(err.value) and err.value.waited_s > 0
            assert isinstance(err.value, TimeoutError)
            assert s.get(NS, "k") == 1  # reads take no lock: never blocked by a writer
        finally:
            reap([p])


def test_syncfs_failure_fails_a_large_batch_before_its_commit(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _fs.can_sync_filesystem():
        pytest.skip("syncfs is Linux-only")
    s = filemem.Store(store_path, shard_max_bytes=1024)
    for i in range(60):
        s.put(NS, f"k{i}", "old" + "x" * 40)

    def bad_syncfs(path: str) -> None:
        raise StorageError("could not sync the file system", errno=errno.EIO, path=path)

    settle(s)
    with s.batch() as b:
        for i in range(60):
            b.put(NS, f"k{i}", "new")
    monkeypatch.setattr(_fs, "sync_filesystem", bad_syncfs)
    with pytest.raises(StorageError):
        settle(s)  # the fold's batch fails before its commit point
    monkeypatch.undo()
    assert temp_files(s.path) == [] and _fs.listdir(os.path.join(s.path, "batches")) == []
    with filemem.Store(s.path, readonly=True) as ro:  # the log serves the batch whole meanwhile
        assert all(ro.get(NS, f"k{i}") == "new" for i in range(60))
    assert s.check() == []
    assert all(s.get(NS, f"k{i}") == "new" for i in range(60))
    s.close()
