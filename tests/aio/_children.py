"""Child-process entry points for the async tests (spawn context: module level, picklable args)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from typing import Any


def probe_locks_child(root: str, out: str) -> None:
    """Try every lock file of the store without waiting; write the busy ones to ``out``."""
    from filemem import _locks

    busy = []
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".lock"):
                got = _locks.try_exclusive(os.path.join(d, n))
                if got is None:
                    busy.append(os.path.join(d, n))
                else:
                    got.release()
    with open(out, "w") as fh:
        json.dump(busy, fh)


def coroutines_child(root: str, wid: int, tasks: int, rounds: int, out: str, barrier: Any) -> None:
    """``tasks`` coroutines of mixed reads and writes on one AsyncStore, with a heartbeat measuring loop lag."""
    from filemem.aio import AsyncStore

    async def main() -> dict[str, Any]:
        lag = 0.0
        ticks = 0
        lags: list[float] = []
        stop = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal lag, ticks
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.002)
                late = time.perf_counter() - t0 - 0.002
                lag = max(lag, late)
                lags.append(late)
                ticks += 1

        torn = 0

        async with AsyncStore(root, durability="flush", shard_max_bytes=4096) as s:
            hb = asyncio.create_task(heartbeat())

            async def worker(t: int) -> None:
                nonlocal torn
                rng = random.Random(wid * 1000 + t)
                for r in range(rounds):
                    kind = rng.random()
                    if kind < 0.4:
                        await s.update("shared", "hot", lambda n: (n or 0) + 1)
                        counts["hot"] += 1
                    elif kind < 0.6:
                        await s.update(("per", f"w{wid}"), f"t{t}", lambda n: (n or 0) + 1)
                        counts[f"t{t}"] = counts.get(f"t{t}", 0) + 1
                    elif kind < 0.7:
                        # A batch moves one unit between two keys: a snapshot must always see them sum to 0.
                        async with s.batch() as b:
                            b.update("pair", "a", lambda n: (n or 0) + 1)
                            b.update("pair", "b", lambda n: (n or 0) - 1)
                    elif kind < 0.8:
                        async with s.snapshot() as snap:
                            a = await snap.get("pair", "a", 0)
                            b = await snap.get("pair", "b", 0)
                            if a + b != 0:
                                torn += 1
                    elif kind < 0.9:
                        await s.put(("docs", f"w{wid}"), f"d{t}-{r}", {"pad": "x" * 100, "r": r})
                    else:
                        got = await s.get("shared", "hot", 0)
                        assert isinstance(got, int)

            counts: dict[str, int] = {"hot": 0}
            barrier.wait()
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(t) for t in range(tasks)))
            elapsed = time.perf_counter() - t0
            stop.set()
            await hb
            aio = (await s.stats())["aio"]
        return {
            "max_lag_s": lag,
            "p99_lag_s": sorted(lags)[int(len(lags) * 0.99)] if lags else 0.0,
            "ticks": ticks,
            "torn": torn,
            "elapsed_s": elapsed,
            "peak_queue": aio["peak_queue_depth"],
            "counts": counts,
        }

    res = asyncio.run(main())
    tmp = out + ".part"
    with open(tmp, "w") as fh:
        json.dump(res, fh)
    os.replace(tmp, out)
