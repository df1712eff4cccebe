"""Helpers for the memory-kind tests: run children, an async store for the async faces."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
from tests.concurrency import _workers as cw
from tests.helpers import reap


def run_children(ctx: Any, target: Any, argsets: list[tuple[Any, ...]], timeout: float = 120) -> None:
    """One child per argument tuple (plus a shared start barrier); join them, fail on a bad exit."""
    barrier = ctx.Barrier(len(argsets))
    procs: list[mp.process.BaseProcess] = []
    try:
        for args in argsets:
            procs.append(cw.start(ctx, target, (*args, barrier)))
        cw.join_ok(procs, timeout)
    finally:
        reap(procs, timeout=0)


def results(tmp: str, n: int) -> list[str]:
    return [os.path.join(tmp, f"r{i}.json") for i in range(n)]


class ThreadAsyncStore:
    """The Store API awaited through ``asyncio.to_thread``: the async faces' contract, without issue 4's AsyncStore."""

    def __init__(self, store: filemem.Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kwargs)

        return call

    def batch(self) -> Any:
        return _AsyncBatch(self.store)


class _AsyncBatch:
    def __init__(self, store: filemem.Store) -> None:
        self._batch = store.batch()
        self.results: list[Any] = []

    async def __aenter__(self) -> Any:
        return self

    def put(self, *a: Any, **kw: Any) -> None:
        self._batch.put(*a, **kw)

    def update(self, *a: Any, **kw: Any) -> None:
        self._batch.update(*a, **kw)

    def delete(self, *a: Any, **kw: Any) -> None:
        self._batch.delete(*a, **kw)

    async def __aexit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.results = await asyncio.to_thread(self._batch.commit)


@pytest.fixture
def mstore(location: str) -> Iterator[filemem.Store]:
    """A fresh store on each backend (``location``: a directory or a postgresql:// URL; issue 16)."""
    s = filemem.Store(location, durability="flush")
    try:
        yield s
    finally:
        s.close()
