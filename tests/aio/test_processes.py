"""100 coroutines of mixed reads and writes in each of 4 real processes: no lost update, no torn read, a live loop."""

from __future__ import annotations

import json
import os
from typing import Any

import filemem
from tests.aio import _children
from tests.helpers import reap

#: Generous on a loaded 2-core machine (other jobs, 4 processes x 17 threads);
#: the measured figures are in docs/async.md. A call that blocked the loop for
#: its lock wait or its fsyncs would show up as seconds here.
MAX_LOOP_LAG_S = 0.5
#: Was 0.03. On format-2 stores (the default since issue 13) each process
#: also runs its fold thread, whose shard encoding holds the GIL: four
#: alternating runs beside a test suite (load ~3) gave p99 14-16 ms on
#: format 1 and 19-52 ms on format 2. That is a figure to bring down (noted
#: in issue 13), not a blocked loop, which the max above catches.
P99_LOOP_LAG_S = 0.1


def test_four_processes_of_100_coroutines_keep_every_guarantee(store_path: str, spawn_ctx: Any) -> None:
    procs, tasks, rounds = 4, 100, 8
    filemem.Store(store_path).close()
    outs = [os.path.join(os.path.dirname(store_path), f"out{i}.json") for i in range(procs)]
    barrier = spawn_ctx.Barrier(procs)
    children = [
        spawn_ctx.Process(target=_children.coroutines_child, args=(store_path, i, tasks, rounds, outs[i], barrier))
        for i in range(procs)
    ]
    try:
        for c in children:
            c.start()
        reap(children, timeout=120)
        assert [c.exitcode for c in children] == [0] * procs
    finally:
        reap(children, timeout=0)
    results = []
    for out in outs:
        with open(out) as fh:
            results.append(json.load(fh))
    with filemem.Store(store_path) as s:
        assert s.get("shared", "hot") == sum(r["counts"]["hot"] for r in results)
        for i, r in enumerate(results):
            for name, n in r["counts"].items():
                if name != "hot":
                    assert s.get(("per", f"w{i}"), name) == n, (i, name)
        assert s.get("pair", "a", 0) + s.get("pair", "b", 0) == 0
        assert s.check() == []
    assert all(r["torn"] == 0 for r in results)
    assert all(r["peak_queue"] > 16 for r in results)  # the limit was really exercised
    lags = [r["max_lag_s"] for r in results]
    p99 = [r["p99_lag_s"] for r in results]
    print(
        f"loop lag per process (ms): max {[round(x * 1000, 1) for x in lags]} p99 {[round(x * 1000, 1) for x in p99]}"
    )
    assert max(lags) < MAX_LOOP_LAG_S, lags
    assert max(p99) < P99_LOOP_LAG_S, p99
