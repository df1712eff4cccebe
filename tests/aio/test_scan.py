"""Store.scan and AsyncStore.scan stream a namespace shard by shard, each live record once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import filemem
from filemem.aio import AsyncStore
from tests.helpers import settle

SMALL: dict[str, Any] = {"durability": "flush", "shard_max_bytes": 2048}


def _fill(s: filemem.Store, ns: str, n: int) -> None:
    with s.batch() as b:
        for i in range(n):
            b.put(ns, f"k{i:05d}", {"i": i, "pad": "p" * 40})


def test_sync_scan_returns_every_live_record_once_in_bounded_batches(store_path: str, codec: str) -> None:
    with filemem.Store(store_path, codec=codec, **SMALL) as s:
        _fill(s, "ns", 1000)
        # Format 2: the records reach the shards at the fold (a scan reads the
        # log's records where they are): fold, so that many shards are streamed.
        settle(s)
        s.put("ns", "gone", 1, ttl=0.001)
        time.sleep(0.01)  # a put with durability="flush" can return within the TTL: let it expire
        batches = list(s.scan("ns", batch_size=64))
        assert all(1 <= len(b) <= 64 for b in batches)
        keys = [it.key for b in batches for it in b]
        assert len(keys) == len(set(keys)) == 1000
        assert sorted(keys) == s.keys("ns")
        assert {it.key: it for b in batches for it in b} == {it.key: it for it in s.items("ns")}
        assert list(s.scan("empty")) == []
        shards = sum(1 for _ in s._engine.iter_shards(("ns",)))
        assert shards > 10  # the point: many shards, streamed one at a time


def test_scan_checks_arguments_at_the_call(store_path: str) -> None:
    with filemem.Store(store_path, **SMALL) as s:
        for bad in (0, -1, 1.5, True, "10"):
            with pytest.raises(filemem.InvalidValueError):
                s.scan("ns", batch_size=bad)  # type: ignore[arg-type]
        with pytest.raises(filemem.InvalidKeyError):
            s.scan("../up")


def test_scan_does_not_fill_the_cache(store_path: str) -> None:
    with filemem.Store(store_path, **SMALL) as w:
        _fill(w, "ns", 1000)
    with filemem.Store(store_path, **SMALL) as s:
        before = s.stats()["cache"]["entries"]
        assert sum(len(b) for b in s.scan("ns")) == 1000
        assert s.stats()["cache"]["entries"] == before


def test_scan_while_another_writer_splits_shards(store_path: str) -> None:
    """Keys that exist throughout are each seen exactly once, whatever splits meanwhile."""
    with filemem.Store(store_path, **SMALL) as s:
        _fill(s, "ns", 300)
        stop = threading.Event()

        def writer() -> None:
            # Bounded: on a format-2 store puts only append to the log and the
            # folds (scan's own, the background one) split the tiny shards
            # behind them; an unbounded writer outruns the folds into 1 KiB
            # shards, and each scan's fold first then chases a backlog of
            # minutes. 1,500 records still split the shards many times while
            # the scans walk them.
            with filemem.Store(store_path, **SMALL) as w:
                i = 0
                while not stop.is_set() and i < 1500:
                    w.put("ns", f"new{i:05d}", {"pad": "q" * 60})
                    i += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(5):
                keys = [it.key for b in s.scan("ns", batch_size=17) for it in b]
                assert len(keys) == len(set(keys)), "a key came out twice"
                assert {f"k{i:05d}" for i in range(300)} <= set(keys)
        finally:
            stop.set()
            t.join()
        assert s.check() == []


def test_async_scan_streams_and_stops_when_the_loop_breaks(store_path: str) -> None:
    with filemem.Store(store_path, **SMALL) as w:
        _fill(w, "ns", 500)

    async def main() -> None:
        async with AsyncStore(store_path, **SMALL) as s:
            seen = []
            async for batch in s.scan("ns", batch_size=50):
                assert len(batch) <= 50
                seen += [it.key for it in batch]
            assert sorted(seen) == await s.keys("ns")
            n = 0
            async for _ in s.scan("ns", batch_size=10):
                n += 1
                if n == 3:
                    break
            assert (await s.stats())["aio"]["in_flight"] == 0

    asyncio.run(main())
