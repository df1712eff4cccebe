"""The async face of sessions: start, status, confinement, limits, cancellation of a slot wait, stop requests."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

import filemem
from filemem.aio import AsyncStore
from tests.aio._util import Heartbeat


def _leftovers(store_path: str) -> list[str]:
    """Files under sessions/ other than records, their locks and limits: tickets and temps."""
    out = []
    for root, _dirs, files in os.walk(os.path.join(store_path, "sessions")):
        out += [os.path.join(root, f) for f in files if f.endswith(".ticket") or ".tmp-" in f]
    return out


def test_session_round_trip_and_confinement(store_path: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path, durability="flush") as store:
            await store.put("pub", "doc", "shared")
            async with store.session(agent="worker-1", namespace="w1", shared=["pub"], metadata={"n": 1}) as s:
                assert not s.closed and s.agent == "worker-1"
                await s.set_status("running", progress=0.5)
                await s.store.put("w1", "k", 1)
                assert await s.store.get("w1", "k") == 1
                assert await s.store.get("pub", "doc") == "shared"
                async with s.store.batch() as b:
                    b.put("w1", "a", 1).put("w1", "b", 2)
                assert await s.store.keys("w1") == ["a", "b", "k"]
                with pytest.raises(filemem.SessionPermissionError):
                    await s.store.put("pub", "doc", "mine now")
                with pytest.raises(filemem.SessionPermissionError):
                    await s.store.get("w2", "k")
                infos = {i.id: i for i in await store.sessions()}
                assert infos[s.id].status == "running" and infos[s.id].progress == 0.5
                assert (await s.info()).metadata == {"n": 1}
                assert s.operations >= 4
            assert s.closed
            assert s.id not in {i.id for i in await store.sessions()}
            got = await store.session_info(s.id)
            assert got is not None and not got.alive
            assert await store.get("pub", "doc") == "shared"
            assert await store.check() == []

    asyncio.run(main())


def test_a_slot_wait_never_blocks_the_loop_and_a_cancelled_wait_leaves_nothing(store_path: str) -> None:
    async def main() -> None:
        async with AsyncStore(store_path, durability="flush") as store:
            await store.limit_sessions(1)
            assert await store.session_limits() == {(): 1}
            first = await store.session(agent="holder")
            beat = Heartbeat()
            beat.start()
            with pytest.raises(filemem.SessionLimitError):
                await store.session(agent="timed-out", timeout=0.3)
            waiter = asyncio.ensure_future(store.session(agent="cancelled"))
            await asyncio.sleep(0.3)
            assert not waiter.done()
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            await beat.stop()
            # The loop kept ticking while two sessions waited for the slot.
            assert beat.ticks > 50 and beat.max_lag_s < 0.25
            # Neither waiter left a record, a ticket or a temp, and the slot is the holder's alone.
            assert [i.agent for i in await store.sessions(alive=None)] == ["holder"]
            assert _leftovers(store_path) == []
            with pytest.raises(filemem.SessionLimitError):
                await store.session(agent="no-wait", wait=False)
            await first.close()
            async with store.session(agent="next", wait=False) as s:
                assert [i.agent for i in await store.sessions()] == ["next"]
                assert s.id
            assert await store.check() == []

    asyncio.run(main())


def test_request_stop_reaches_an_async_session(store_path: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        seen: list[str] = []

        def on_stop(s: object) -> None:
            assert threading.current_thread() is not threading.main_thread()
            seen.append(getattr(s, "id", ""))
            loop.call_soon_threadsafe(stopped.set)

        async with AsyncStore(store_path, durability="flush") as store:
            changes: list[str] = []
            sub = await store.subscribe_sessions(lambda c: changes.append(c.kind))
            async with store.session(agent="w", on_stop=on_stop) as s:
                assert await s.stop_requested() is False
                # Another handle (as another process would) asks it to stop.
                with filemem.Store(store_path) as other:
                    assert other.request_stop(s.id) is True
                await asyncio.wait_for(stopped.wait(), 5)
                assert seen == [s.id] and await s.stop_requested() is True
            assert await store.request_stop(s.id) is False
            for _ in range(100):
                if "session-ended" in changes:
                    break
                await asyncio.sleep(0.02)
            sub.close()
            assert changes[0] == "session-started" and "session-ended" in changes

    asyncio.run(main())
