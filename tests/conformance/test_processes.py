"""No lost updates between real processes, on every backend (issue 16).

The same child entry points as tests/concurrency (spawn context, results in
files), pointed at a directory or a ``postgresql://`` URL.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import filemem
from tests.concurrency import _workers as w
from tests.helpers import reap


def _run(ctx: Any, target: Any, argsets: list[tuple[Any, ...]], timeout: float = 120) -> None:
    barrier = ctx.Barrier(len(argsets))
    procs = []
    try:
        for args in argsets:
            procs.append(w.start(ctx, target, (*args, barrier)))
        w.join_ok(procs, timeout)
    finally:
        reap(procs, timeout=0)


def test_processes_update_one_counter_exactly(location: str, tmp_path: Path, spawn_ctx: Any) -> None:
    n, m = 4, 40
    filemem.Store(location).close()
    keys = [[["hot"], "counter"], [["hot", "b"], "other"]]
    res = [str(tmp_path / f"r{i}.json") for i in range(n)]
    _run(spawn_ctx, w.incr_child, [(location, {"durability": "flush"}, keys, m, False, i, res[i]) for i in range(n)])
    counted: dict[str, int] = {}
    for r in res:
        with open(r) as fh:
            for k, c in json.load(fh)["counts"].items():
                counted[k] = counted.get(k, 0) + c
    with filemem.Store(location) as s:
        assert s.get("hot", "counter", 0) + s.get("hot/b", "other", 0) == n * m
        assert s.get("hot", "counter", 0) == counted.get("hot|counter", 0)
        assert s.get("hot/b", "other", 0) == counted.get("hot/b|other", 0)


def test_processes_batches_stay_whole(location: str, tmp_path: Path, spawn_ctx: Any) -> None:
    """Cross-namespace batches of updates from several processes: every pair moves together."""
    n, m = 3, 25
    filemem.Store(location).close()
    pairs = [[["x"], "a"], [["y", "z"], "b"], [["x"], "c"]]
    res = [str(tmp_path / f"b{i}.json") for i in range(n)]
    _run(spawn_ctx, w.batch_incr_child, [(location, {"durability": "flush"}, pairs, m, res[i]) for i in range(n)])
    with filemem.Store(location) as s:
        assert [s.get(tuple(ns), k) for ns, k in pairs] == [n * m] * 3
    assert all(os.path.exists(r) for r in res)
