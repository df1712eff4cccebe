"""Regressions for review findings on the memory kinds (each fails before its fix)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import filemem
from filemem.memory import AsyncWorklog, Worklog


def test_worklog_append_when_closed_raises_before_writing(mstore: filemem.Store) -> None:
    log = Worklog(mstore, summarize_every=1)
    log.close()
    with pytest.raises(filemem.StoreClosedError):
        log.append("s", "hello")
    assert log.count("s") == 0
    assert log.entries("s") == []


def test_worklog_append_never_raises_after_commit(mstore: filemem.Store) -> None:
    log = Worklog(mstore, summarize_every=1)
    real = log._start

    def closing(*a: Any, **kw: Any) -> Any:
        log._closed = True  # closed between the commit and the refresh
        return real(*a, **kw)

    log._start = closing  # type: ignore[method-assign]
    key = log.append("s", "hello")
    assert [e.id for e in log.entries("s")] == [key]
    log.close()


def test_async_worklog_append_when_closed_raises_before_writing(store_path: str) -> None:
    async def main() -> None:
        async with filemem.AsyncStore(store_path, durability="flush") as astore:
            log = AsyncWorklog(astore, summarize_every=1)
            await log.close()
            with pytest.raises(filemem.StoreClosedError):
                await log.append("s", "hello")
            assert await log.count("s") == 0

    asyncio.run(main())
