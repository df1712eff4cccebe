"""Helpers for the async tests: lock probes, temp-file scans, a loop-lag heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from filemem import _fs, _locks


def lock_files(root: str) -> list[str]:
    out = []
    for d, _, names in os.walk(root):
        out += [os.path.join(d, n) for n in names if n.endswith(".lock")]
    return sorted(out)


def temp_files(root: str) -> list[str]:
    out = []
    for d, _, names in os.walk(root):
        out += [os.path.join(d, n) for n in names if _fs.TEMP_MARK in n]
    return out


def writer_lock(store_path: str, ns: str) -> str:
    """The lock a write to ``ns`` waits for: the log's append lock (format 2), else the namespace's first shard's.

    Seeds ``ns`` first. A test holds it through its own descriptor to play
    "another process in the middle of a write".
    """
    import filemem

    with filemem.Store(store_path) as s:
        s.put(ns, "seed", 0)
        if s._engine.log is not None:
            return os.path.join(s._engine.log.dir, "append.lock")
        view = s._engine.view((ns,))
        view.refresh()
        return view.lock_path(view.resolve("0" * 64))


def busy_locks(root: str) -> list[str]:
    """Lock files someone holds (probed with a fresh descriptor: flock excludes it like another process).

    Not the log's ``open.lock`` nor ``writers.lock``: every open (read-write)
    handle holds them shared, by design.
    """
    busy = []
    for path in lock_files(root):
        if os.path.basename(path) in ("open.lock", "writers.lock") and os.path.basename(os.path.dirname(path)) == "wal":
            continue
        got = _locks.try_exclusive(path)
        if got is None:
            busy.append(path)
        else:
            got.release()
    return busy


class Heartbeat:
    """Ticks every ``period_s`` on the running loop and records how late each tick was."""

    def __init__(self, period_s: float = 0.002) -> None:
        self.period_s = period_s
        self.max_lag_s = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.period_s)
            lag = time.perf_counter() - t0 - self.period_s
            self.ticks += 1
            self.max_lag_s = max(self.max_lag_s, lag)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class _HeldAfterOpen:
    """A writer lock held "by another process", taken once the store is open.

    On format 2 opening a store waits for the log's append lock (it re-derives
    the tail), so a test that holds that lock must take it after the open.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._held: _locks.Held | None = None

    def take(self) -> None:
        self._held = _locks.exclusive(self.path, 1.0)

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None
