"""Four processes, four FileMemStore instances, one store: every write seen by all, no lost update.

LangGraph's BaseStore has no compare-and-set, so a ``get`` then ``put`` from
two processes can lose an increment; ``FileMemStore.update`` (filemem's
``update`` under its exclusive cross-process lock) is how a user keeps an
exact counter, and what these tests race, with the default durability. Both
tests run on each backend (a directory, a ``postgresql://`` URL: issue 16).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.store.base")

from filemem.integrations.langgraph import FileMemStore
from tests.concurrency._workers import read_acks, read_result
from tests.helpers import reap
from tests.integrations import _langgraph_workers as w

PROCS = 4


def test_four_processes_see_every_write_and_lose_no_update(location: str, tmp_path: Path, spawn_ctx: Any) -> None:
    path = location
    FileMemStore(path).close()
    n_keys, n_incr = 30, 40
    barrier = spawn_ctx.Barrier(PROCS)
    results = [str(tmp_path / f"r{i}.json") for i in range(PROCS)]
    procs = [
        spawn_ctx.Process(target=w.writer_child, args=(path, i, n_keys, n_incr, PROCS, barrier, results[i]))
        for i in range(PROCS)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(180)
        assert [p.exitcode for p in procs] == [0] * PROCS
    finally:
        reap(procs, timeout=0)
    for r in results:
        got = read_result(r)
        assert got["seen"] == PROCS * n_keys  # every process sees every process's writes
        assert got["namespaces"] == PROCS
        assert got["counter"] == PROCS * n_incr  # all done before the second barrier: exact
    with FileMemStore(path) as lg:
        for i in range(PROCS):
            assert {it.key for it in lg.search(("shared", f"p{i}"), limit=100)} == {f"k/{j}" for j in range(n_keys)}
        assert lg.get(("hot",), "counter").value == {"n": PROCS * n_incr}  # type: ignore[union-attr]
        assert lg.store.check() == []


def test_sigkill_mid_update_loses_no_acknowledged_increment(location: str, tmp_path: Path, spawn_ctx: Any) -> None:
    path = location
    FileMemStore(path).close()
    barrier = spawn_ctx.Barrier(PROCS + 1)
    acks = [str(tmp_path / f"a{i}.log") for i in range(PROCS)]
    procs = [spawn_ctx.Process(target=w.incr_child, args=(path, acks[i], barrier)) for i in range(PROCS)]
    try:
        for p in procs:
            p.start()
        barrier.wait(120)
        # Kill two of them mid-stream, once each has acknowledged some increments.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and min(len(read_acks(a)) for a in acks[:2]) < 20:
            time.sleep(0.02)
        for p in procs[:2]:
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.join(180)
        assert [p.exitcode for p in procs] == [-signal.SIGKILL] * 2 + [0] * (PROCS - 2)
    finally:
        reap(procs, timeout=0)
    acked = sum(len(read_acks(a)) for a in acks)
    with FileMemStore(path) as lg:
        final = lg.get(("hot",), "counter").value["n"]  # type: ignore[union-attr]
        # Every acknowledged increment is there; a killed child may have
        # committed one more whose ack it never wrote.
        assert acked <= final <= acked + 2
        seen = sorted(n for a in acks for (n,) in read_acks(a))
        assert len(seen) == len(set(seen))  # no two updates saw the same value: none overwrote another
        # Nothing torn: at most the temp file of a killed writer, which check(fix=True) removes.
        assert {f.code for f in lg.store.check()} <= {"temp-file"}
        lg.store.check(fix=True)
        assert lg.store.check() == []
