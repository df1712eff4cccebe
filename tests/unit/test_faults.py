"""Injected faults: the disk says no, bytes rot, writers die. Clear errors, nothing served wrong."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

import filemem
import filemem.admin
from filemem import CorruptShardError, LockTimeout, StorageError, _fs
from filemem._engine import _split as engine_split
from tests.helpers import reap

NS = ("agent", "facts")

# Faults in format 1's shard writes (each put rewrites its shard); format 2: tests/wal/test_faults_on_log.py.
pytestmark = pytest.mark.store_format(1)


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
    real_write = os.write

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageError, match="disk full"):
        store.put(NS, "k", "new")
    with pytest.raises(StorageError), store.batch() as b:
        b.put(NS, "k", "new")
        b.put(("other",), "k", "new")
    monkeypatch.setattr(os, "write", real_write)
    assert store.get(NS, "k") == "old" and store.get(("other",), "k") is None
    assert temp_files(store.path) == []
    assert store.check() == []


def test_directory_fsync_failure_is_reported(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(NS, "k", "old")

    def bad_dir_fsync(path: str) -> None:
        raise StorageError("could not fsync directory", errno=errno.EIO, path=path)

    monkeypatch.setattr(_fs, "fsync_dir", bad_dir_fsync)
    with pytest.raises(StorageError):
        store.put(NS, "k", "new")  # never reported as a success


@pytest.mark.parametrize("damage", ["flip-body", "flip-header", "truncate", "empty"])
def test_damaged_shard_is_never_served(store: filemem.Store, damage: str) -> None:
    store.put(NS, "k", {"secret": "value-0123456789"})
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
            fresh.put(NS, "k", 2)  # a writer never builds on a damaged shard
        findings = fresh.check()
        assert [f.code for f in findings] == ["corrupt-shard"]
        fixed = fresh.check(fix=True)
        assert fixed[0].fixed and "quarantine" in fixed[0].action
        assert fresh.check() == []
        assert fresh.get(NS, "k") is None  # lost, and said so; never served wrong
        fresh.put(NS, "k", "again")
        assert fresh.get(NS, "k") == "again"
    assert os.listdir(os.path.join(store.path, "quarantine"))


def test_leftover_temp_files_are_removed(store: filemem.Store) -> None:
    store.put(NS, "k", 1)
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
    store.put(("a",), "x", 0)
    store.put(("b",), "y", 0)
    _crash_after_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt), store.batch() as b:
        b.put(("a",), "x", 1)
        b.put(("b",), "y", 1)
    monkeypatch.undo()
    # The intent is on disk and its owner is "dead" (its lock was released).
    assert [f.code for f in store.check()] == ["unfinished-batch"]
    with filemem.Store(store.path) as fresh:  # opening a store recovers
        assert fresh.get(("a",), "x") == 1 and fresh.get(("b",), "y") == 1
        assert fresh.check() == []


def test_batch_interrupted_after_commit_fixed_by_check(store: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    _crash_after_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt), store.batch() as b:
        b.put(("a",), "x", 1)
        b.put(("b",), "y", 1)
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

    monkeypatch.setattr(_fs, "write_fd", die)
    with pytest.raises(KeyboardInterrupt), store.batch() as b:
        b.put(("a",), "x", 1)
        b.put(("b",), "y", 1)
    monkeypatch.setattr(_fs, "write_fd", real)
    assert store.get(("a",), "x") == 0 and store.get(("b",), "y") is None
    assert temp_files(store.path) == []
    assert store.check() == []


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

    monkeypatch.setattr(engine_split.os, "unlink", crash_unlink)
    with pytest.raises(KeyboardInterrupt):
        for i in range(200):
            s.put(NS, f"k{i:03d}", "v" * 40)
    monkeypatch.undo()
    written = i  # the put that crashed did land before its split started
    with filemem.Store(store_path) as fresh:
        assert all(fresh.get(NS, f"k{j:03d}") == "v" * 40 for j in range(written + 1))
        assert [f.code for f in fresh.check()] == ["interrupted-split"]
        assert fresh.check(fix=True)[0].fixed
        assert fresh.check() == []
        assert len(fresh.keys(NS)) == written + 1
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

    monkeypatch.setattr(engine_split.os, "unlink", crash_unlink)
    with pytest.raises(KeyboardInterrupt):
        for i in range(200):
            s.put(NS, f"k{i:03d}", "v" * 40)
    monkeypatch.undo()
    with filemem.Store(store_path, shard_max_bytes=2048) as w:
        for j in range(200):
            w.put(NS, f"k{j:03d}", j)
        assert [w.get(NS, f"k{j:03d}") for j in range(200)] == list(range(200))
        # Format 2: the split happens, and is finished, at the fold.
        filemem.admin.fold(w)
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
        view = s._engine.view(NS)
        lock = view.lock_path(view.resolve(__import__("filemem._names", fromlist=["x"]).hash_bits("k")))
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

    monkeypatch.setattr(_fs, "sync_filesystem", bad_syncfs)
    with pytest.raises(StorageError), s.batch() as b:
        for i in range(60):
            b.put(NS, f"k{i}", "new")
    monkeypatch.undo()
    assert all(s.get(NS, f"k{i}") == "old" + "x" * 40 for i in range(60))
    assert temp_files(s.path) == [] and _fs.listdir(os.path.join(s.path, "batches")) == []
    assert s.check() == []
    s.close()
