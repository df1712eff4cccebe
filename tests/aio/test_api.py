"""AsyncStore behaves like Store: reads, writes, batches, snapshots, mapping, stats, feed, errors."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest

import filemem
from filemem.aio import AsyncStore
from tests.aio._util import Heartbeat, _HeldAfterOpen, busy_locks, temp_files, writer_lock

FAST: dict[str, Any] = {"durability": "flush"}


def test_round_trip_in_each_codec(store_path: str, codec: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path, codec=codec) as s:
            v1 = await s.put("a/b", "k", {"x": [1, 2]}, ttl=60)
            assert await s.get("a/b", "k") == {"x": [1, 2]}
            assert await s.get("a/b", "missing", "dflt") == "dflt"
            item = await s.get_item(("a", "b"), "k")
            assert item is not None and item.version == v1 and item.expires_at is not None
            assert await s.update("a/b", "n", lambda n: (n or 0) + 5) == 5
            assert await s.keys("a/b") == ["k", "n"]
            assert [it.key async for it in s.items("a/b")] == ["k", "n"]
            assert [k async for k in s.keys("a/b")] == ["k", "n"]
            assert await s.list_namespaces() == [("a", "b")]
            with pytest.raises(filemem.ConflictError):
                await s.put("a/b", "k", 2, if_version=v1 + 100)
            assert await s.delete("a/b", "k") is True
            assert await s.delete("a/b", "k") is False
            assert await s.check() == []
            assert await s.compact() is not None
            assert s.codec == codec and s.path == os.path.abspath(store_path) and not s.readonly
        # The sync store sees the same data.
        with filemem.Store(store_path) as sync:
            assert sync.get("a/b", "n") == 5

    asyncio.run(main())


def test_bad_input_is_refused_with_our_errors_and_nothing_written(store_path: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path, **FAST) as s:
            with pytest.raises(filemem.InvalidKeyError):
                await s.put("../x", "k", 1)
            with pytest.raises(filemem.InvalidValueError):
                await s.put("ns", "k", object())

            async def coro_fn(n: Any) -> int:
                return 1

            with pytest.raises(filemem.InvalidValueError):
                await s.update("ns", "k", coro_fn)
            with pytest.raises(filemem.InvalidValueError):
                async with s.batch() as b:
                    b.update("ns", "k", coro_fn)
            with pytest.raises(filemem.InvalidValueError):
                s.scan("ns", batch_size=0)
            assert await s.list_namespaces() == []
        with pytest.raises(filemem.InvalidValueError):
            AsyncStore(store_path, max_in_flight=0)
        # A store that cannot be opened leaves no worker thread behind (the leak check sees it).
        with pytest.raises(filemem.FileMemError):
            AsyncStore(store_path + "-missing", readonly=True)
        with pytest.raises(filemem.FileMemError):
            await AsyncStore.open(store_path + "-missing", create=False)

    asyncio.run(main())
    assert not os.path.exists(os.path.join(store_path, "ns", "x"))


def test_closed_store_refuses_calls_and_close_is_idempotent(store_path: str) -> None:
    async def main() -> None:
        s = await AsyncStore.open(store_path, **FAST)
        await s.put("ns", "k", 1)
        await s.close()
        await s.close()
        with pytest.raises(filemem.StoreClosedError):
            await s.get("ns", "k")
        with pytest.raises(filemem.StoreClosedError):
            await s.put("ns", "k", 2)

    asyncio.run(main())


def test_batch_commits_all_or_nothing(store_path: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path, **FAST) as s:
            async with s.batch() as b:
                b.put("a", "x", 1).put("b", "y", 2).update("a", "n", lambda n: (n or 0) + 1)
                assert len(b) == 3
            assert b.results[2] == 1
            with pytest.raises(RuntimeError):
                async with s.batch() as b2:
                    b2.put("a", "x", 99)
                    raise RuntimeError("abandon")
            assert await s.get("a", "x") == 1
            assert await s.get("b", "y") == 2

    asyncio.run(main())


def test_snapshot_reads_one_version_and_releases_its_locks(store_path: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path, **FAST) as s:
            await s.put("ns", "a", 1)
            async with s.snapshot() as snap:
                assert await snap.get("ns", "a") == 1
                assert [it.key for it in await snap.items("ns")] == ["a"]
                assert busy_locks(store_path)  # shared locks held between awaits
                writer = asyncio.create_task(s.put("ns", "a", 2))
                await asyncio.sleep(0.05)
                if s.sync._engine.log is None:
                    # Format 1: a writer waits for the snapshot; the loop stays free meanwhile.
                    assert not writer.done()
                else:
                    await writer  # format 2: writers never wait for a snapshot (it holds only folds off)
                assert await snap.get("ns", "a") == 1  # either way the snapshot reads its one version
                assert (await s.stats())["aio"]["snapshots_open"] == 1
            await writer
            assert await s.get("ns", "a") == 2
            assert busy_locks(store_path) == []
            with pytest.raises(filemem.StoreClosedError):
                await snap.get("ns", "a")

    asyncio.run(main())


def test_mapping_view(store_path: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path, **FAST) as s:
            m = s.mapping("agent/facts")
            await m.set("sky", "blue")
            assert await m.getitem("sky") == "blue"
            assert await m.contains("sky") and await m.len() == 1
            assert [k async for k in m] == ["sky"]
            await m.delete("sky")
            with pytest.raises(KeyError):
                await m.getitem("sky")
            with pytest.raises(KeyError):
                await m.delete("sky")

    asyncio.run(main())


def test_lock_wait_does_not_block_the_loop_and_queue_depth_is_visible(store_path: str) -> None:
    lock = writer_lock(store_path, "ns")
    # Held through a separate descriptor: to the store this is another process.
    fd = os.open(lock, os.O_RDWR)
    import portalocker

    async def main() -> None:
        async with AsyncStore(store_path, max_in_flight=2, **FAST) as s:
            # Taken once the store is open: on format 2 opening waits for the append lock.
            portalocker.lock(fd, portalocker.LockFlags.EXCLUSIVE)
            hb = Heartbeat()
            hb.start()
            tasks = [asyncio.create_task(s.put("ns", f"k{i}", i)) for i in range(10)]
            await asyncio.sleep(0.3)
            aio = (await s.stats())["aio"]
            assert (aio["in_flight"], aio["waiting"], aio["queue_depth"]) == (2, 8, 10)
            assert not any(t.done() for t in tasks)
            portalocker.unlock(fd)
            await asyncio.gather(*tasks)
            await hb.stop()
            # The puts waited >= 0.3 s for the lock: a loop blocked by that
            # wait would show a lag that long. Generous for a loaded machine.
            assert hb.ticks > 20
            assert hb.max_lag_s < 0.25, hb.max_lag_s
            aio = (await s.stats())["aio"]
            assert aio["queue_depth"] == 0 and aio["peak_queue_depth"] >= 10
            assert len(await s.keys("ns")) == 11

    try:
        asyncio.run(main())
    finally:
        os.close(fd)


def test_lock_timeout_reaches_the_coroutine(store_path: str) -> None:
    lock = writer_lock(store_path, "ns")
    held = _HeldAfterOpen(lock)

    async def main() -> None:
        async with AsyncStore(store_path, lock_timeout_s=0.2, **FAST) as s:
            held.take()
            with pytest.raises(filemem.LockTimeout):
                await s.put("ns", "k", 1)

    try:
        asyncio.run(main())
    finally:
        held.release()
    assert temp_files(store_path) == []


def test_one_store_on_two_loops(store_path: str) -> None:
    s = AsyncStore(store_path, **FAST)
    asyncio.run(s.put("ns", "k", 1))
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(s.get("ns", "k"))))
    t.start()
    t.join()
    assert out == [1]
    asyncio.run(s.close())


def test_subscribe_with_an_async_callback_and_changes(store_path: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path, watch="polling", poll_interval_s=0.01, **FAST) as s:
            seen: asyncio.Queue[filemem.Change] = asyncio.Queue()

            async def on_change(change: filemem.Change) -> None:
                await seen.put(change)

            sub = await s.subscribe(on_change, ("agent",))
            feed = s.changes(("agent",))
            with filemem.Store(store_path, **FAST) as other:
                other.put("agent/x", "k", 1)
            got = await asyncio.wait_for(seen.get(), 10)
            assert got.namespace == ("agent", "x")
            got2 = await asyncio.wait_for(feed.__anext__(), 10)
            assert got2.namespace == ("agent", "x")
            sub.close()
            feed.close()

    asyncio.run(main())


def test_a_hot_cached_get_is_answered_on_the_loop_and_still_fresh(store_path: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path, **FAST) as s:
            await s.put("ns", "k", {"v": 1})
            for _ in range(3):  # through a worker: starts the watcher, fills the hot table
                assert await s.get("ns", "k") == {"v": 1}
                await asyncio.sleep(0.01)
            ops = (await s.stats())["aio"]["ops"]
            for _ in range(10):
                assert await s.get("ns", "k") == {"v": 1}
            got = await s.get("ns", "k")
            assert got == {"v": 1}
            got["v"] = 2  # a copy: the cache is not aliased
            assert await s.get("ns", "k") == {"v": 1}
            assert (await s.stats())["aio"]["ops"] == ops  # no worker round trip
            await s.put("ns", "k", {"v": 3})  # own writes are seen at once
            assert await s.get("ns", "k") == {"v": 3}

    asyncio.run(main())


def test_close_waits_for_running_calls_and_refuses_new_ones(store_path: str) -> None:
    lock = writer_lock(store_path, "ns")
    held = _HeldAfterOpen(lock)

    async def main() -> None:
        s = AsyncStore(store_path, **FAST)
        held.take()
        puts = [asyncio.create_task(s.put("ns", f"k{i}", i)) for i in range(3)]
        await asyncio.sleep(0.05)
        closing = asyncio.create_task(s.close())
        await asyncio.sleep(0.05)
        assert not closing.done()  # the running calls hold it open
        with pytest.raises(filemem.StoreClosedError):
            await s.get("ns", "k0", consistency="strict")
        asyncio.get_running_loop().call_later(0.05, held.release)
        await closing
        assert [await p for p in puts] == [p.result() for p in puts]
        with filemem.Store(store_path) as sync:
            assert sorted(sync.keys("ns")) == ["k0", "k1", "k2", "seed"]

    try:
        asyncio.run(main())
    finally:
        held.release()
