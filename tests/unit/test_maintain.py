"""Compaction that merges tiny sibling shards, and what a crash in the middle of a merge leaves (filemem._maintain)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import filemem
import filemem._maintain as maintain
import filemem.admin
from filemem import StorageError
from tests.cli._util import tree_hash


def _shards(path: str, ns: str) -> list[str]:
    return sorted(f for f in os.listdir(os.path.join(path, "ns", ns)) if f.endswith(".shard"))


def _fill(path: str, codec: str, keep: int = 10, total: int = 200) -> dict[str, Any]:
    with filemem.Store(path, codec=codec, shard_max_bytes=1024, durability="flush") as store:
        for i in range(total):
            store.put("ns", f"k{i:03d}", {"i": i, "pad": "p" * 40})
        for i in range(keep, total):
            store.delete("ns", f"k{i:03d}")
        return {it.key: it.value for it in store.items("ns")}


@pytest.mark.store_format(1)  # format 2 splits at the fold: tests/wal/test_maintain_on_log.py has its version
def test_compact_merges_tiny_siblings_back(tmp_path: Path, codec: str) -> None:
    path = str(tmp_path / "s")
    live = _fill(path, codec)
    before = _shards(path, "ns")
    assert len(before) > 8
    with filemem.Store(path) as store:
        top = max(it.version for it in store.items("ns"))
        got = store.compact()
        assert got["merges"] > 0
        after = _shards(path, "ns")
        assert len(after) < len(before) // 2
        assert {it.key: it.value for it in store.items("ns")} == live
        assert store.check() == []
        # Versions are never reused: the merged shard's generation is above both leaves'.
        assert store.put("ns", "k150", "again") > top
        assert store.put("ns", "k000", "again") > top
        again = store.compact()
        assert again["merges"] == 0 or len(_shards(path, "ns")) < len(after)


def test_compact_without_merge_keeps_the_shards(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    _fill(path, "json")
    before = _shards(path, "ns")
    with filemem.Store(path) as store:
        assert filemem.admin.compact(store, merge=False)["merges"] == 0
    assert _shards(path, "ns") == before


def test_a_busy_shard_is_skipped_not_waited_for(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    _fill(path, "json")
    with filemem.Store(path) as store, store.snapshot() as snap:
        snap.items("ns")  # shared locks on every shard of ns
        engine = store._engine
        view = engine.view(("ns",))
        started = _shards(path, "ns")
        assert maintain.merge_small_siblings(engine, view, 1 << 20) == 0  # returns at once
        assert _shards(path, "ns") == started
    with filemem.Store(path) as store:
        assert maintain.merge_small_siblings(store._engine, store._engine.view(("ns",)), 1 << 20) > 0


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_merge_cut_short_loses_nothing(
    tmp_path: Path, codec: str, fail_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merge that dies after writing the flagged parent (fail_at=1) or after one leaf went (2)."""
    path = str(tmp_path / "s")
    live = _fill(path, codec)
    real_unlink = maintain._unlink
    calls = [0]

    def failing_unlink(p: str) -> None:
        calls[0] += 1
        if calls[0] == fail_at:
            raise StorageError("injected: the process died here", path=p)
        real_unlink(p)

    monkeypatch.setattr(maintain, "_unlink", failing_unlink)
    with filemem.Store(path) as store, pytest.raises(StorageError):
        store.compact()
    monkeypatch.setattr(maintain, "_unlink", real_unlink)
    # Another process opening the store now reads every record (the flagged parent and leaves agree).
    with filemem.Store(path, readonly=True, consistency="strict") as other:
        assert {it.key: it.value for it in other.items("ns")} == live
        assert all(other.get("ns", k) == v for k, v in live.items())
        assert [f.code for f in other.check()] == ["interrupted-split"]
    with filemem.Store(path) as store:
        fixed = store.check(fix=True)
        assert [f.code for f in fixed] == ["interrupted-split"] and all(f.fixed for f in fixed)
        assert store.check() == []
        assert {it.key: it.value for it in store.items("ns")} == live
        # And a writer of the interrupted range repairs it by itself too.
        store.put("ns", "k001", "new")
        assert store.get("ns", "k001") == "new"
        assert store.compact()["merges"] >= 0
        assert store.check() == []


def test_a_writer_finishes_an_interrupted_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "s")
    live = _fill(path, "json")

    def dead(p: str) -> None:
        raise StorageError("injected", path=p)

    monkeypatch.setattr(maintain, "_unlink", dead)
    with filemem.Store(path) as store, pytest.raises(StorageError):
        store.compact()
    monkeypatch.undo()
    with filemem.Store(path) as store:
        for k in live:
            store.update("ns", k, lambda v: {**v, "seen": True})
        assert all(v["seen"] for v in (it.value for it in store.items("ns")))
        # Format 2: the writes wait in the log, and the fold that moves them is
        # the writer that finishes the merge (nothing to do on format 1).
        filemem.admin.fold(store)
        assert store.check() == []


def test_convert_refuses_what_the_codec_cannot_hold(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with filemem.Store(path, codec="msgpack") as store:
        store.put("a", "ok", 1)
        store.put("b", "raw", b"\x00")
    before = tree_hash(path)
    with filemem.Store(path) as store, pytest.raises(filemem.InvalidValueError, match="b/raw"):
        filemem.admin.convert(store, "json")
    assert tree_hash(path) == before


def test_a_damaged_leaf_is_never_merged(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    _fill(path, "json")
    ns_dir = os.path.join(path, "ns", "ns")
    victim = os.path.join(ns_dir, _shards(path, "ns")[0])
    with open(victim, "r+b") as fh:
        fh.seek(-3, os.SEEK_END)
        fh.write(b"###")
    with filemem.Store(path) as store:
        got = store.compact()
        assert got["damaged_skipped"] == 1
        assert os.path.exists(victim)  # left for check --fix, never merged away
        assert [f.code for f in store.check()] == ["corrupt-shard"]
