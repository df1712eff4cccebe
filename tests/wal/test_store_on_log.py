"""Store behaviours whose shard files the log changes (they appear at the fold), on a v2 store.

The same tests as in tests/unit/test_store.py, adapted.
"""

from __future__ import annotations

import os
import time

import pytest

import filemem
from filemem import ConflictError
from tests.helpers import settle

NS = ("agent-1", "episodic")


def snapshot_tree(path: str) -> dict[str, bytes]:
    """Every file under path with its bytes (lock files excluded: they are empty and harmless)."""
    out = {}
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            if f.endswith(".lock"):
                continue
            full = os.path.join(dirpath, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out


def test_ttl(store: filemem.Store) -> None:
    # A TTL of a second, not milliseconds: two fsync'd puts on a loaded CI box
    # can take longer than a short TTL, and the record must still be live here.
    store.put(NS, "short", 1, ttl=1.0)
    store.put(NS, "long", 2, ttl=60)
    item = store.get_item(NS, "long")
    assert item is not None and item.expires_at is not None
    short = store.get_item(NS, "short")
    assert short is not None and short.value == 1 and short.expires_at is not None
    time.sleep(max(0.0, short.expires_at - time.time()) + 0.05)
    assert store.get(NS, "short") is None
    assert store.keys(NS) == ["long"]
    with pytest.raises(ConflictError):
        store.put(NS, "short", 3, if_version=1)  # expired means absent
    store.put(NS, "other", 3)  # a write of the shard drops the expired record from disk
    settle(store)
    shards = [v for k, v in snapshot_tree(store.path).items() if k.endswith(".shard")]
    assert all(b"short" not in v for v in shards)


def test_compact_drops_expired(store: filemem.Store) -> None:
    store.put(NS, "short", 1, ttl=0.01)
    time.sleep(0.03)
    assert store.compact()["expired_dropped"] == 1
    shards = [v for k, v in snapshot_tree(store.path).items() if k.endswith(".shard")]
    assert len(shards) == 1 and b'"count":0' in shards[0]


def test_batch_across_many_shards(store_path: str, codec: str) -> None:
    with filemem.Store(store_path, codec=codec, shard_max_bytes=2048) as s:
        for i in range(200):
            s.put(NS, f"k{i}", "x" * 40)
        with s.batch() as b:
            for i in range(200):
                b.put(NS, f"k{i}", i)
        assert [s.get(NS, f"k{i}") for i in range(200)] == list(range(200))
        settle(s)  # the fold writes the shards, many of them in batches of its own
        assert (
            not os.path.exists(os.path.join(store_path, "batches"))
            or os.listdir(os.path.join(store_path, "batches")) == []
        )
        assert s.check() == []


def test_splits_keep_every_record(store_path: str, codec: str) -> None:
    with filemem.Store(store_path, codec=codec, shard_max_bytes=1024, durability="flush") as s:
        for i in range(500):
            s.put(NS, f"key-{i}", {"i": i, "pad": "p" * 30})
        settle(s)
        shard_files = [
            f for f in os.listdir(os.path.join(store_path, "ns", "agent-1", "episodic")) if f.endswith(".shard")
        ]
        assert len(shard_files) > 10
        for f in shard_files:
            assert os.path.getsize(os.path.join(store_path, "ns", "agent-1", "episodic", f)) < 2048
        assert s.keys(NS) == sorted(f"key-{i}" for i in range(500))
        assert all(s.get(NS, f"key-{i}")["i"] == i for i in range(500))
    with filemem.Store(store_path) as fresh:  # a new process view sees the same
        assert len(fresh.keys(NS)) == 500
        assert fresh.check() == []
