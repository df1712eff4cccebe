"""Cancellation at every await point of a write: consistent store, free locks, no temp files, no late change.

Delays are injected at each step of the write sequence (lock taken, temp
filled, rename), and a lock is sometimes held by "another process" (a
separate descriptor) or the only slot taken by another call, so that
cancelling after 0, 1, 2, ... loop iterations lands in every phase: before
the call, in the slot queue, in the lock wait, in the write, after it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import portalocker
import pytest

import filemem
from filemem import _engine, _fs, _locks
from filemem._wal._writer import LogWriter
from filemem.aio import AsyncStore
from tests.aio import _children
from tests.aio._util import _HeldAfterOpen, busy_locks, lock_files, temp_files, writer_lock
from tests.helpers import reap

STEP_S = 0.002


def _slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stretch each phase of a write so cancellations land inside it."""
    exclusive, shared, fill, replace = _locks.exclusive, _locks.shared, _fs.TempFile.fill, _fs.replace

    def slow_exclusive(*a: Any, **k: Any) -> Any:
        time.sleep(STEP_S)
        return exclusive(*a, **k)

    def slow_shared(*a: Any, **k: Any) -> Any:
        time.sleep(STEP_S)
        return shared(*a, **k)

    def slow_fill(self: Any, *a: Any, **k: Any) -> Any:
        time.sleep(STEP_S)
        return fill(self, *a, **k)

    def slow_replace(*a: Any, **k: Any) -> Any:
        time.sleep(STEP_S)
        return replace(*a, **k)

    # Format 2: a plain put reads no shard and takes no shard lock any more
    # (issue 13), so its one slow step is the log's sync. Without this the
    # put was over too fast for a cancel to land while it ran (CI: no
    # "cancelled-new" outcome once in five runs).
    sync = LogWriter.sync

    def slow_sync(self: Any, *a: Any, **k: Any) -> Any:
        time.sleep(STEP_S)
        return sync(self, *a, **k)

    monkeypatch.setattr(_locks, "exclusive", slow_exclusive)
    monkeypatch.setattr(_locks, "shared", slow_shared)
    monkeypatch.setattr(_fs.TempFile, "fill", slow_fill)
    monkeypatch.setattr(_fs, "replace", slow_replace)
    monkeypatch.setattr(LogWriter, "sync", slow_sync)


KEYS = [("a", "k1"), ("b", "k2"), ("c", "k3")]


def _state(s: filemem.Store) -> tuple[Any, ...]:
    return tuple(s.get(ns, k, consistency="strict") for ns, k in KEYS)


def _op(kind: str, s: AsyncStore, n: int) -> Callable[[], Awaitable[Any]]:
    if kind == "put":
        return lambda: s.put("a", "k1", n)
    if kind == "update":
        return lambda: s.update("a", "k1", lambda _: n)
    if kind == "delete":
        return lambda: s.delete("a", "k1")

    async def batch() -> None:
        async with s.batch() as b:
            for ns, k in KEYS:
                b.put(ns, k, n)

    return batch


def _probe_in_child(ctx: Any, root: str) -> list[str]:
    out = root + ".probe.json"
    p = ctx.Process(target=_children.probe_locks_child, args=(root, out))
    try:
        p.start()
        reap([p], timeout=60)
    finally:
        reap([p], timeout=0)
    with open(out) as fh:
        busy: list[str] = json.load(fh)
    return busy


@pytest.mark.parametrize("kind", ["put", "update", "delete", "batch"])
def test_cancel_a_write_at_every_await_point(
    store_path: str, monkeypatch: pytest.MonkeyPatch, spawn_ctx: Any, kind: str
) -> None:
    with filemem.Store(store_path) as seed:
        for ns, k in KEYS:
            seed.put(ns, k, -1)
    a_lock = writer_lock(store_path, "a")
    _slow(monkeypatch)
    # No background fold (format 2): its thread folds on its own schedule and
    # holds the fold lock and shard locks while it does, which the probe below
    # would take for locks a cancelled write left behind.
    monkeypatch.setattr(_engine._log, "FOLD_IDLE_S", 3600.0)
    outcomes: collections.Counter[str] = collections.Counter()

    async def main() -> None:
        async with AsyncStore(store_path, max_in_flight=1) as s:
            check = s.sync
            for n in range(36):
                if kind == "delete":
                    await s.put("a", "k1", -1)
                before = _state(check)
                phase = n % 3
                blocker = None
                fd = -1
                if phase == 1:
                    # The only slot is taken: our call waits in the queue first.
                    blocker = asyncio.create_task(s.put("d", "other", n))
                elif phase == 2:
                    # "Another process" holds the lock our write needs for a while.
                    fd = os.open(a_lock, os.O_RDWR)
                    portalocker.lock(fd, portalocker.LockFlags.EXCLUSIVE)
                    asyncio.get_running_loop().call_later(0.004 * (n // 3), portalocker.unlock, fd)
                task = asyncio.create_task(_op(kind, s, n)())
                for _ in range(n // 3):
                    await asyncio.sleep(STEP_S / 2)
                task.cancel()
                try:
                    await task
                    cancelled = False
                except asyncio.CancelledError:
                    cancelled = True
                if blocker is not None:
                    await blocker
                if fd >= 0:
                    await asyncio.sleep(0.004 * (n // 3) + 0.01)  # the call_later has run
                    os.close(fd)
                after = _state(check)
                if kind == "delete":
                    new: tuple[Any, ...] = (None, *before[1:])
                elif kind == "batch":
                    new = (n, n, n)
                else:
                    new = (n, *before[1:])
                assert after in (before, new), (n, before, after)  # all or nothing
                assert busy_locks(store_path) == [], n
                assert temp_files(store_path) == [], n
                await asyncio.sleep(0.02)
                assert _state(check) == after, n  # nothing changes after the coroutine ended
                outcomes[f"{'cancelled' if cancelled else 'completed'}-{'new' if after == new else 'old'}"] += 1
            aio = (await s.stats())["aio"]
            assert aio["in_flight"] == aio["waiting"] == 0
            assert await s.check() == []

    asyncio.run(main())
    print(kind, dict(outcomes))
    # Every outcome a cancellation can have was reached, and never a half one.
    assert outcomes["cancelled-old"] > 0, outcomes
    assert outcomes["cancelled-new"] > 0, outcomes  # cancelled while running: it completed first
    assert lock_files(store_path)
    assert _probe_in_child(spawn_ctx, store_path) == []


def test_cancel_inside_a_snapshot_releases_its_locks(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with filemem.Store(store_path) as seed:
        for ns, k in KEYS:
            seed.put(ns, k, 0)
    _slow(monkeypatch)
    # No background fold (format 2): the fold lock is then held only by a
    # snapshot's pin, which is what the probe below must find released.
    monkeypatch.setattr(_engine._log, "FOLD_IDLE_S", 3600.0)

    async def main() -> None:
        async with AsyncStore(store_path, lock_timeout_s=2) as s:
            for n in range(24):

                async def reader() -> None:
                    async with s.snapshot() as snap:
                        for ns, k in KEYS:
                            await snap.get(ns, k)
                        await snap.items("a")
                        await asyncio.sleep(1)  # cancelled here at the latest

                task = asyncio.create_task(reader())
                for _ in range(n):
                    await asyncio.sleep(STEP_S / 2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert busy_locks(store_path) == [], n
                assert (await s.stats())["aio"]["snapshots_open"] == 0
                # A writer gets in at once.
                started = time.monotonic()
                await s.put("a", "k1", n)
                assert time.monotonic() - started < 1.0

    asyncio.run(main())


@pytest.mark.store_format(2)
def test_cancel_while_a_snapshot_opens_releases_the_log_pin(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Format 2: opening a snapshot pins the log (a shared wal/fold.lock). A task
    # cancelled while the open runs must not leave the open's pin held.
    with filemem.Store(store_path) as seed:
        seed.put("a", "k1", 0)
    monkeypatch.setattr(_engine._log, "FOLD_IDLE_S", 3600.0)
    opened = threading.Event()
    real_snapshot = filemem.Store.snapshot

    def slow_snapshot(self: filemem.Store) -> Any:
        snap = real_snapshot(self)
        opened.set()
        time.sleep(0.3)  # the task is cancelled in here: the open completes anyway
        return snap

    monkeypatch.setattr(filemem.Store, "snapshot", slow_snapshot)

    async def main() -> None:
        async with AsyncStore(store_path, lock_timeout_s=2) as s:

            async def reader() -> None:
                async with s.snapshot():
                    await asyncio.sleep(5)

            task = asyncio.create_task(reader())
            while not opened.is_set():
                await asyncio.sleep(0.005)
            assert any(path.endswith("fold.lock") for path in busy_locks(store_path))  # the pin is real
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert busy_locks(store_path) == []
            assert (await s.stats())["aio"]["snapshots_open"] == 0

    asyncio.run(main())


def test_cancel_during_a_lock_wait_returns_promptly_and_writes_nothing(store_path: str) -> None:
    """The thread gives up its wait (it cannot be killed, but it can be told); nothing is written."""
    with filemem.Store(store_path) as seed:
        seed.put("a", "k1", 0)
    held = _HeldAfterOpen(writer_lock(store_path, "a"))

    async def main() -> None:
        async with AsyncStore(store_path, lock_timeout_s=30) as s:
            held.take()
            tasks = [
                asyncio.create_task(s.put("a", "k1", i)) for i in range(1, 5)
            ]  # one polls flock, three the in-process lock
            await asyncio.sleep(0.2)
            started = time.monotonic()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with pytest.raises(asyncio.CancelledError):
                    await t
            assert time.monotonic() - started < 1.0
            aio = (await s.stats())["aio"]
            assert aio["cancelled_while_running"] == 4 and aio["in_flight"] == 0
            held.release()
            assert await s.get("a", "k1", consistency="strict") == 0
            assert temp_files(store_path) == []
            assert busy_locks(store_path) == []

    try:
        asyncio.run(main())
    finally:
        held.release()


def test_cancelled_while_queued_never_runs(store_path: str) -> None:
    with filemem.Store(store_path) as seed:
        seed.put("a", "k1", 0)
    held = _HeldAfterOpen(writer_lock(store_path, "a"))

    async def main() -> None:
        async with AsyncStore(store_path, max_in_flight=1) as s:
            held.take()
            first = asyncio.create_task(s.put("a", "k1", 1))
            queued = [asyncio.create_task(s.put("b", f"q{i}", i)) for i in range(5)]
            await asyncio.sleep(0.1)
            assert (await s.stats())["aio"]["waiting"] == 5
            for t in queued[:3]:
                t.cancel()
            held.release()
            await first
            await asyncio.gather(*queued[3:])
            for t in queued[:3]:
                assert t.cancelled()
            assert await s.keys("b") == ["q3", "q4"]
            assert (await s.stats())["aio"]["cancelled_before_start"] == 3

    try:
        asyncio.run(main())
    finally:
        held.release()
