"""Reproducers of defects a review found, kept so they stay fixed (one test per finding)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

import filemem
from filemem import _fs
from filemem._names import hash_bits

NS = ("n",)


def test_threads_sharing_a_view_lose_nothing(store_path: str) -> None:
    """Finding 1: refresh() returning False because another thread refreshed first."""
    store = filemem.Store(store_path, durability="flush", shard_max_bytes=1024)
    stable = [f"stable-{i}" for i in range(40)]
    for k in stable:
        store.put(NS, k, "p" * 200)
    acked: list[list[str]] = [[] for _ in range(4)]
    misses: list[str] = []
    stop = threading.Event()

    def writer(t: int) -> None:
        for i in range(150):
            store.put(NS, f"w{t}-{i}", "p" * 200)
            acked[t].append(f"w{t}-{i}")

    def reader() -> None:
        while not stop.is_set():
            misses.extend(k for k in stable if store.get(NS, k) is None)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for th in threads + readers:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    for th in readers:
        th.join()
    store.close()
    with filemem.Store(store_path) as fresh:
        assert misses == []
        assert [k for a in acked for k in a if fresh.get(NS, k) is None] == []
        assert all(fresh.get(NS, k) is not None for k in stable)
        assert fresh.check() == []


def test_versions_not_reused_after_a_split_empties_a_range(store_path: str) -> None:
    """Finding 5: a range left without a file restarted at generation 0 (ABA)."""
    s = filemem.Store(store_path, durability="flush", shard_max_bytes=1024)
    key = "victim"
    first_bit = hash_bits(key)[0]
    for i in range(20):
        seen = s.put(NS, key, i)
    s.delete(NS, key)
    i = 0
    while os.path.exists(os.path.join(s._engine.ns_dir(NS), "s.shard")):
        other = f"other-{i}"
        i += 1
        if hash_bits(other)[0] != first_bit:
            s.put(NS, other, "x" * 100)
    assert s.put(NS, key, "recreated") > seen
    with pytest.raises(filemem.ConflictError):
        s.put(NS, key, "stale", if_version=seen)
    s.close()


def test_a_failed_split_does_not_fail_the_committed_write(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 4: the split after the commit raised, and a retried update applied twice."""
    s = filemem.Store(store_path, durability="flush", shard_max_bytes=1024)
    for i in range(3):
        s.put(NS, f"pad{i}", "x" * 60)
    assert os.path.getsize(os.path.join(s._engine.ns_dir(NS), "s.shard")) < 700
    real = _fs.atomic_write

    def leaves_fail(target: str, data: bytes, **kw: object) -> object:
        if b'"splitting":false' in data.split(b"\n", 1)[0] and os.path.basename(target) != "s.shard":
            raise _fs.storage_error(OSError(errno.ENOSPC, "No space left on device"), "write", target)
        return real(target, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_fs, "atomic_write", leaves_fail)
    # This update pushes the shard past the limit; its split fails after the commit.
    assert s.update(NS, "blob", lambda v: (v or "") + "y" * 600) == "y" * 600  # returns normally
    monkeypatch.undo()
    assert s.get(NS, "blob") == "y" * 600
    assert s.stats()["split_failures"] >= 1
    s.update(NS, "blob", lambda v: v + "z")
    assert s.get(NS, "blob") == "y" * 600 + "z"
    assert s.check(fix=True) is not None
    assert s.check() == []
    s.close()


def test_check_requarantines_only_what_is_still_corrupt(store: filemem.Store) -> None:
    """Finding 3: a slow checker moved a writer's new, valid shard into quarantine."""
    from filemem._check import _quarantine

    store.put(NS, "important", "old")
    view = store._engine.view(NS)
    path = view.shard_path("")
    data = bytearray(Path(path).read_bytes())
    data[-3] ^= 1
    Path(path).write_bytes(bytes(data))
    assert store.check(fix=True)[0].fixed
    store.put(NS, "important", "new valid data")  # a writer recreates the shard
    late = _quarantine(store._engine, view, "", path, "judged corrupt earlier")  # the slow checker
    assert late.action == "none needed"
    assert store.get(NS, "important") == "new valid data"
    assert len(os.listdir(os.path.join(store.path, "quarantine"))) == 1


def test_over_nested_values_are_refused_up_front(store: filemem.Store) -> None:
    """Finding 9: one over-nested value made its whole shard undecodable elsewhere."""
    store.put(NS, "innocent", "data")
    deep: list[object] = []
    cur = deep
    for _ in range(150):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    with pytest.raises(filemem.InvalidValueError, match="nested"):
        store.put(NS, "deep", deep)
    assert store.get(NS, "innocent") == "data"


def test_refused_input_creates_no_files(store: filemem.Store) -> None:
    """Finding 10: refused puts created namespace directories and lock files."""
    before = sorted(str(p) for p in Path(store.path).rglob("*"))
    with pytest.raises(filemem.InvalidValueError):
        store.put(("brand", "new", "ns"), "k", object())
    with pytest.raises(filemem.InvalidKeyError):
        store.put(NS, "bad\ud800", 1)
    with pytest.raises(filemem.InvalidKeyError), store.batch() as b:
        b.put(NS, "ok", 1)
        b.put(("x\udfff",), "k", 1)
    assert sorted(str(p) for p in Path(store.path).rglob("*")) == before


def test_read_only_store_never_recovers(tmp_path: Path) -> None:
    """Finding 8: a read-only store rolled a dead batch forward."""
    import shutil

    src = Path(__file__).resolve().parent.parent.parent / "fixtures" / "v1-json-unfinished-batch"
    dest = tmp_path / "s"
    shutil.copytree(src, dest)
    before = {str(p): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    with filemem.Store(dest, readonly=True) as ro:
        ro.get(("tenant", "acme-corp"), "k")
        with ro.snapshot() as snap:
            snap.get(("tenant", "acme-corp"), "k")
    after = {str(p): p.read_bytes() for p in dest.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    assert after == before


def test_snapshot_locks_a_namespace_that_does_not_exist_yet(store_path: str) -> None:
    """Finding 7: a snapshot saw a record appear in a namespace it had read as empty."""
    with filemem.Store(store_path) as s, filemem.Store(store_path, lock_timeout_s=0.2) as other:
        with s.snapshot() as snap:
            assert snap.get(("fresh",), "k") is None
            with pytest.raises(filemem.LockTimeout):
                other.put(("fresh",), "k", "phantom")
            assert snap.items(("fresh",)) == []
        other.put(("fresh",), "k", "after")
        assert s.get(("fresh",), "k", consistency="strict") == "after"


def _open_store(path: str, barrier: object, result: str) -> None:
    barrier.wait(30)  # type: ignore[attr-defined]
    try:
        with filemem.Store(path) as s:
            s.put(("race",), f"k{os.getpid()}", 1)
        Path(result).write_text("ok")
    except Exception as exc:  # reported to the parent through the file
        Path(result).write_text(f"{type(exc).__name__}: {exc}")


def test_many_processes_create_the_same_store_at_once(tmp_path: Path) -> None:
    """Found by the fsync counter test: a process saw another's temp marker and refused the directory."""
    import multiprocessing as mp

    from tests.helpers import reap

    ctx = mp.get_context("spawn")
    for round_ in range(3):
        path = str(tmp_path / f"store{round_}")
        barrier = ctx.Barrier(6)
        results = [str(tmp_path / f"r{round_}-{i}") for i in range(6)]
        procs = [ctx.Process(target=_open_store, args=(path, barrier, r)) for r in results]
        try:
            for p in procs:
                p.start()
        finally:
            reap(procs)
        assert [Path(r).read_text() for r in results] == ["ok"] * 6
        with filemem.Store(path) as s:
            assert len(s.keys(("race",))) == 6


def test_a_batch_wider_than_the_open_file_limit_fails_clearly(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the benchmark: a batch over ~1,000 shards died with EMFILE halfway through locking."""
    from filemem import _engine

    s = filemem.Store(store_path, shard_max_bytes=1024, durability="flush")
    for i in range(300):
        s.put(NS, f"k{i}", "x" * 60)
    monkeypatch.setattr(_engine._commit, "_max_locks", lambda: 8)
    before = sorted(str(p) for p in Path(store_path).rglob("*.shard"))
    with pytest.raises(filemem.InvalidValueError, match="open-file limit"), s.batch() as b:
        for i in range(300):
            b.put(NS, f"k{i}", "y")
    assert sorted(str(p) for p in Path(store_path).rglob("*.shard")) == before
    assert s.get(NS, "k7") == "x" * 60
    s.close()
