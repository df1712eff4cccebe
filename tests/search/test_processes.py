"""Search with real processes: concurrent writers and searchers, SIGKILL mid index write."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import pytest

import filemem

from ..concurrency._workers import read_acks, read_result
from ..helpers import reap
from . import _workers
from ._reference import assert_same, reference


def _fill(path: str, n: int) -> None:
    with filemem.Store(path, durability="flush", watch="off") as s, s.batch() as b:
        for i in range(n):
            b.put("n", f"k{i}", {"text": f"alpha w{i % 50} base"})


def test_searches_see_other_processes_writes(store_path: str, spawn_ctx: Any, tmp_path: Any) -> None:
    filemem.Store(store_path).close()
    acks = [str(tmp_path / f"ack{w}") for w in range(3)]
    writers = [
        spawn_ctx.Process(target=_workers.writer_child, args=(store_path, f"w{w}", 60, acks[w])) for w in range(3)
    ]
    result = str(tmp_path / "searcher.json")
    searcher = spawn_ctx.Process(target=_workers.searcher_child, args=(store_path, 30, result))
    procs = [*writers, searcher]
    try:
        for p in procs:
            p.start()
        with filemem.Store(store_path, watch="off") as s:
            while any(p.is_alive() for p in writers):
                acked = {a[0] for path in acks for a in read_acks(path)}  # acked before the search started
                found = {h.item.key for h in s.search("n", "alpha", limit=10_000)}
                assert acked <= found, sorted(acked - found)[:5]
                time.sleep(0.02)
        reap(procs)
        assert all(p.exitcode == 0 for p in procs)
        assert read_result(result)["bad"] == 0
        with filemem.Store(store_path, watch="off") as fresh:
            hits = fresh.search("n", "alpha", limit=10_000)
            assert len(hits) == 180
            assert_same(
                fresh.search("n", "uw1x7 alpha", limit=20), reference(fresh, ("n",), "uw1x7 alpha"), 0, 20, fresh
            )
            assert fresh.check() == []
    finally:
        reap(procs, timeout=5)


def test_sigkill_during_index_writes_never_breaks_search(store_path: str, spawn_ctx: Any, tmp_path: Any) -> None:
    _fill(store_path, 1500)
    rng = random.Random(7)
    for round_ in range(4):
        ready = str(tmp_path / f"ready{round_}")
        p = spawn_ctx.Process(target=_workers.churn_child, args=(store_path, ready, round_))
        try:
            p.start()
            deadline = time.monotonic() + 30
            while not os.path.exists(ready) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2 + rng.random() * 0.4)
            os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
        finally:
            reap([p], timeout=10)
        with filemem.Store(store_path, watch="off") as s:
            q = f"w{rng.randrange(50)} churn"
            assert_same(s.search("n", q, limit=30), reference(s, ("n",), q), 0, 30, s)
            leftover = [f.code for f in s.check(fix=True)]
            assert set(leftover) <= {"temp-file"}, leftover
            assert s.check() == []


@pytest.mark.parametrize("where", ["temp", "in-place"])
def test_killed_mid_index_write_at_exact_point(store_path: str, spawn_ctx: Any, where: str) -> None:
    _fill(store_path, 300)
    p = spawn_ctx.Process(target=_workers.torn_index_child, args=(store_path, where))
    try:
        p.start()
        p.join(60)
    finally:
        reap([p], timeout=5)
    assert p.exitcode == -signal.SIGKILL
    with filemem.Store(store_path, watch="off") as s:
        codes = [f.code for f in s.check()]
        assert codes == (["temp-file"] if where == "temp" else ["corrupt-index"])
        hits = s.search("n", "alpha brandnew", limit=400)
        assert hits[0].item.key == "new"
        assert_same(hits, reference(s, ("n",), "alpha brandnew"), 0, 400, s)
        assert s._searcher.counters["index_files_damaged"] == (1 if where == "in-place" else 0)
        s.check(fix=True)
        assert s.check() == []
