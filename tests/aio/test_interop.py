"""The patterns docs/async.md recommends for mixing the two faces, run for real (no deadlock, same data)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import filemem
from filemem.aio import AsyncStore


def test_sync_code_drives_the_async_store_on_a_loop_thread(store_path: str) -> None:
    """A sync thread submits coroutines to a loop running in another thread."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        store = asyncio.run_coroutine_threadsafe(AsyncStore.open(store_path, durability="flush"), loop).result(10)
        futs = [
            asyncio.run_coroutine_threadsafe(store.update("ns", "n", lambda n: (n or 0) + 1), loop) for _ in range(20)
        ]
        assert sorted(f.result(10) for f in futs) == list(range(1, 21))
        assert asyncio.run_coroutine_threadsafe(store.get("ns", "n"), loop).result(10) == 20
        asyncio.run_coroutine_threadsafe(store.close(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


def test_async_code_uses_a_sync_store_through_to_thread(store_path: str) -> None:
    async def main() -> Any:
        with filemem.Store(store_path, durability="flush") as store:
            await asyncio.gather(
                *(asyncio.to_thread(store.update, "ns", "n", lambda n: (n or 0) + 1) for _ in range(10))
            )
            return await asyncio.to_thread(store.get, "ns", "n")

    assert asyncio.run(main()) == 10


def test_one_store_both_faces_from_a_loop_and_a_thread(store_path: str) -> None:
    """AsyncStore.sync is the same Store: a worker thread and the loop share cache and locks."""

    async def main() -> None:
        async with AsyncStore(store_path, durability="flush") as store:

            def thread_work() -> None:
                for _ in range(50):
                    store.sync.update("ns", "n", lambda n: (n or 0) + 1)

            t = threading.Thread(target=thread_work)
            t.start()
            await asyncio.gather(*(store.update("ns", "n", lambda n: (n or 0) + 1) for _ in range(50)))
            await asyncio.to_thread(t.join)
            assert await store.get("ns", "n") == 100

    asyncio.run(main())


def test_plain_sync_code_can_run_one_async_call(store_path: str) -> None:
    """No loop running: asyncio.run is fine (never call it inside a running loop)."""
    store = AsyncStore(store_path, durability="flush")
    asyncio.run(store.put("ns", "k", 1))
    assert asyncio.run(store.get("ns", "k")) == 1
    asyncio.run(store.close())
