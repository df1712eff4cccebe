"""``check(fix=True)`` and ``compact()`` are "safe on a live store": run them in a loop against writers."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import filemem
from tests.concurrency import _workers as w
from tests.helpers import reap

# On a live store the checker can meet a split in progress or a temp file renamed away under it; it may
# report those (as warnings or as an already finished split), never anything worse.
LIVE_NOISE = {"temp-file", "interrupted-split"}


def test_check_fix_and_compact_in_a_loop_while_processes_write(store_path: str, spawn_ctx: Any) -> None:
    n, m = 3, 400
    namespaces = [("live", "a"), ("live", "b")]
    keys = [[list(ns), f"key-{j:03d}"] for ns in namespaces for j in range(60)]
    opts = {"durability": "flush", "shard_max_bytes": 1024}
    filemem.Store(store_path).close()
    res = [os.path.join(os.path.dirname(store_path), f"r{i}.json") for i in range(n)]
    barrier = spawn_ctx.Barrier(n)
    procs = []
    codes: Counter[tuple[str, bool]] = Counter()
    rounds = 0
    try:
        for i in range(n):
            procs.append(w.start(spawn_ctx, w.incr_child, (store_path, opts, keys, m, True, 50 + i, res[i], barrier)))
        with filemem.Store(store_path, **opts) as checker:
            while any(p.is_alive() for p in procs):
                codes.update((f.code, f.fixed) for f in checker.check(fix=True))
                if rounds % 5 == 0:
                    checker.compact()
                rounds += 1
        w.join_ok(procs, 90)
    finally:
        reap(procs, timeout=0)
    print(f"check rounds={rounds} findings={dict(codes)}")
    assert {code for code, _ in codes} <= LIVE_NOISE, codes
    expected: Counter[str] = Counter()
    for r in res:
        expected.update(w.read_result(r)["counts"])
    with filemem.Store(store_path) as s:
        actual = {f"{'/'.join(ns)}|{it.key}": it.value["n"] for ns in namespaces for it in s.items(ns)}
        assert actual == dict(expected)
        assert s.check() == []
    assert rounds >= 5
