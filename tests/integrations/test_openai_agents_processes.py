"""Several processes on one FileMemSession: history in commit order, nothing lost, every pop exact.

On both backends (a directory, a ``postgresql://`` URL: issue 16).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import reap
from tests.integrations._children import session_append_child, session_pop_child

pytest.importorskip("agents")

from filemem.integrations.openai_agents import FileMemSession


def _acks(path: Path) -> list[list[Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("]")]


def _run(
    ctx: mp.context.SpawnContext, tmp: Path, jobs: list[tuple[Callable[..., None], tuple[Any, ...]]]
) -> list[Path]:
    """Start every job, release them at once, wait; return their ack files."""
    go = tmp / f"go-{time.monotonic_ns()}"
    ack_paths = [tmp / f"{go.name}-{i}.acks" for i in range(len(jobs))]
    procs = [ctx.Process(target=fn, args=(*args, str(go), str(ack_paths[i]))) for i, (fn, args) in enumerate(jobs)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 300  # spawned children import the SDK: slow on a loaded machine
        while not all(Path(f"{a}.ready").exists() for a in ack_paths):
            assert time.monotonic() < deadline and all(p.is_alive() for p in procs), "a child did not start"
            time.sleep(0.01)
        go.touch()
        for p in procs:
            p.join(240)
        assert [p.exitcode for p in procs] == [0] * len(procs)
    finally:
        reap(procs)
    return ack_paths


def _history(store_path: str) -> list[str]:
    session = FileMemSession("shared", store_path)
    try:
        assert session.store.check() == []
        return [item["content"] for item in asyncio.run(session.get_items())]
    finally:
        session.close()


def test_concurrent_appends_keep_commit_order_and_lose_nothing(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    store = location
    procs, per = 4, 25
    acks = _run(spawn_ctx, tmp_path, [(session_append_child, (store, p, per)) for p in range(procs)])
    adds = [a for path in acks for a in _acks(path)]
    assert len(adds) == procs * per
    history = _history(store)
    expected = [c for a in adds for c in a[1]]
    assert sorted(history) == sorted(expected) and len(history) == len(set(history))  # nothing lost or doubled
    where = {content: i for i, content in enumerate(history)}
    for _, contents, _, _ in adds:  # one add_items call is contiguous
        assert [where[c] for c in contents] == list(range(where[contents[0]], where[contents[0]] + len(contents)))
    # Commit order: an add that returned before another began comes first.
    for _, a, _, a_end in adds:
        for _, b, b_start, _ in adds:
            if a_end < b_start:
                assert where[a[-1]] < where[b[0]], (a, b)


def test_pops_race_adds_and_each_other_exactly(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    store = location
    seed = FileMemSession("shared", store)
    asyncio.run(seed.add_items([{"role": "user", "content": f"seed-{i}"} for i in range(60)]))
    seed.close()
    jobs: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
        (session_append_child, (store, 0, 20)),
        (session_append_child, (store, 1, 20)),
        (session_pop_child, (store, 2, 30)),
        (session_pop_child, (store, 3, 30)),
    ]
    acks = _run(spawn_ctx, tmp_path, jobs)
    added = [f"seed-{i}" for i in range(60)] + [c for path in acks[:2] for a in _acks(path) for c in a[1]]
    popped = [a[1] for path in acks[2:] for a in _acks(path)]
    remaining = _history(store)
    assert len(popped) == 60
    assert len(popped) == len(set(popped))  # no item popped twice
    assert not set(popped) & set(remaining)  # a popped item is gone
    assert sorted(popped + remaining) == sorted(added)  # and every other one is still there
    # Then drain it from two processes at once: every item comes out exactly once.
    acks = _run(spawn_ctx, tmp_path, [(session_pop_child, (store, p, -1)) for p in (4, 5)])
    drained = [a[1] for path in acks for a in _acks(path)]
    assert sorted(drained) == sorted(remaining) and _history(store) == []
    # Each drainer saw the items newest first.
    for path in acks:
        mine = [a[1] for a in _acks(path)]
        assert [remaining.index(c) for c in mine] == sorted((remaining.index(c) for c in mine), reverse=True)
