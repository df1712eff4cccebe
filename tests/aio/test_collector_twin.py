"""The async face of the collector: AsyncStore.collector, acollect/aflush/aclose, dead-letter tools."""

from __future__ import annotations

import asyncio

import filemem
from filemem.aio import AsyncStore
from tests.aio._util import Heartbeat


def test_async_collector_round_trip_never_blocks_the_loop(store_path: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path) as store:
            beat = Heartbeat()
            beat.start()
            async with store.collector(batch_size=100) as c:
                ids = [await c.acollect(("agent-1", "events"), f"ev-{i}", {"i": i}) for i in range(300)]
                assert ids == sorted(ids) and len(set(ids)) == 300
                await c.aflush()
                assert await store.get(("agent-1", "events"), "ev-299") == {"i": 299}
            assert c.closed
            await beat.stop()
            assert beat.max_lag_s < 0.25
            c2 = await store.collector(journal=False)
            await c2.acollect("x", "k", 1)
            await c2.aclose()
            assert await store.get("x", "k") == 1
            assert await store.dead_letters() == []
            assert await store.replay_dead_letters() == {"applied": 0, "superseded": 0, "failed": 0}
            assert await store.check() == []
        with filemem.Store(store_path) as sync:
            assert len(sync.keys(("agent-1", "events"))) == 300

    asyncio.run(main())
