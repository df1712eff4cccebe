"""Compaction, merges and conversion on a v2 store: the fold writes the shards they work on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import filemem
import filemem._maintain as maintain
import filemem.admin
from filemem import StorageError
from filemem._engine import _log as engine_log
from tests.cli._util import tree_hash
from tests.helpers import settle


@pytest.fixture(autouse=True)
def _no_background_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folds run only where the test says (settle): an armed fault must hit the fold the test watches."""
    monkeypatch.setattr(engine_log, "FOLD_IDLE_S", 3600.0)


def _shards(path: str, ns: str) -> list[str]:
    return sorted(f for f in os.listdir(os.path.join(path, "ns", ns)) if f.endswith(".shard"))


def _fill(path: str, codec: str, keep: int = 10, total: int = 200) -> dict[str, Any]:
    with filemem.Store(path, codec=codec, shard_max_bytes=1024, durability="flush") as store:
        for i in range(total):
            store.put("ns", f"k{i:03d}", {"i": i, "pad": "p" * 40})
        settle(store)  # the shards grow and split now, before the deletes empty them
        for i in range(keep, total):
            store.delete("ns", f"k{i:03d}")
        return {it.key: it.value for it in store.items("ns")}


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
        settle(store)  # the fold writing into the range finishes the merge
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
