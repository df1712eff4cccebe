"""AsyncStore on a server (issue 16): reads over psycopg's async pool answer exactly as the worker-thread path.

The pool path is the default on a server (measured faster on a quiet machine: filemem/_async/_pool.py);
these tests turn it on and hold it to the same answers, errors and cleanup.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import filemem
from filemem._async import _pool
from filemem.aio import AsyncStore

pytestmark = [pytest.mark.postgres, pytest.mark.pg_only]


@pytest.fixture
def pooled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pool, "USE_ASYNC_POOL", True)


def test_pool_reads_answer_as_the_thread_path(pg_url: str, pooled: None) -> None:
    async def main() -> None:
        async with AsyncStore(pg_url, codec="msgpack") as store:
            await store.put("a/b", "k1", {"x": [1, 2], "b": b"\x00"})
            await store.put("a/b", "k0", "zero")
            await store.put("a/b", "gone", 1, ttl=0.05)
            await asyncio.sleep(0.1)
            sync = store.sync
            assert await store.get("a/b", "k1") == sync.get("a/b", "k1") == {"x": [1, 2], "b": b"\x00"}
            assert await store.get("a/b", "gone", "dflt") == "dflt"  # expired on the server's clock
            assert await store.get_item("a/b", "k1") == sync.get_item("a/b", "k1")
            assert await store.get_item("a/b", "missing") is None
            assert await store.items("a/b") == sync.items("a/b")
            assert await store.keys("a/b") == ["k0", "k1"] == sync.keys("a/b")
            got = await asyncio.gather(*(store.get("a/b", "k0") for _ in range(40)))
            assert got == ["zero"] * 40
            stats = (await store.stats())["aio"]
            assert stats["async_reads"] >= 46 and stats["ops"] == 3  # the reads never went to a thread
            with pytest.raises(filemem.InvalidKeyError):
                await store.get_item("a/b", "")
            with pytest.raises(filemem.InvalidKeyError):
                await store.items("a/../b")

    asyncio.run(main())


def test_a_cancelled_pool_read_leaves_the_store_usable(pg_url: str, pooled: None) -> None:
    async def main() -> None:
        async with AsyncStore(pg_url, max_in_flight=2) as store:
            await store.put("a", "k", "v")
            for _ in range(20):
                tasks = [asyncio.create_task(store.get("a", "k")) for _ in range(4)]
                await asyncio.sleep(0)
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            assert await store.get("a", "k") == "v"
            assert [await store.get("a", "k") for _ in range(5)] == ["v"] * 5

    asyncio.run(main())


def test_another_loop_takes_the_thread_path_and_close_is_clean(pg_url: str, pooled: None) -> None:
    store = AsyncStore(pg_url)

    async def first() -> None:
        await store.put("a", "k", 1)
        assert await store.get("a", "k") == 1  # opens the pool on this loop

    loop = asyncio.new_event_loop()
    done = threading.Event()
    runner = threading.Thread(target=lambda: (loop.run_forever(), done.set()), daemon=True)
    runner.start()
    try:
        asyncio.run_coroutine_threadsafe(first(), loop).result(30)

        async def second() -> None:
            before = (await store.stats())["aio"]["ops"]
            assert await store.get("a", "k") == 1  # not the pool's loop: a worker thread answers
            assert (await store.stats())["aio"]["ops"] == before + 1
            await store.close()  # hands the pool's close to its own loop
            with pytest.raises(filemem.StoreClosedError):
                await store.get("a", "k")

        asyncio.run(second())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(30)
        loop.close()


def test_by_default_server_reads_go_over_the_pool(pg_url: str) -> None:
    async def main() -> None:
        async with AsyncStore(pg_url) as store:
            await store.put("a", "k", 1)
            assert await store.get("a", "k") == 1
            stats = (await store.stats())["aio"]
            assert stats["async_reads"] >= 1 and stats["ops"] == 1  # only the put ran in a thread

    asyncio.run(main())


def test_server_reads_chooses_the_path_per_store(pg_url: str) -> None:
    # The public switch: "pool" (the default) reads on the loop, "threads" in
    # the worker threads; anything else is refused before anything opens.
    async def main() -> None:
        async with AsyncStore(pg_url, server_reads="pool") as pooled_store:
            await pooled_store.put("a", "k", "v")
            assert await pooled_store.get("a", "k") == "v"
            stats = (await pooled_store.stats())["aio"]
            assert stats["async_reads"] >= 1 and stats["ops"] == 1  # only the put ran in a thread
        async with AsyncStore(pg_url, server_reads="threads") as threaded:
            assert await threaded.get("a", "k") == "v"
            stats = (await threaded.stats())["aio"]
            assert stats.get("async_reads", 0) == 0 and stats["ops"] == 1
        with pytest.raises(filemem.InvalidValueError, match="server_reads"):
            AsyncStore(pg_url, server_reads="fibers")  # type: ignore[arg-type]

    asyncio.run(main())
