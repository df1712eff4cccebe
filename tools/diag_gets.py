"""CPU per cached get in 1 and 4 processes, and how many hit the hot-key table (issue 13 diagnostic).

Usage::

    python tools/diag_gets.py [--gets 40000] [--keys 10000] [--modes sample,keys]

Populates a store with ``--keys`` records, then for each mode and process
count spawns N processes that each warm up and do ``--gets / N`` random
cached gets from one barrier. ``sample`` warms with 3,000 random gets (the
gets workload's old warm-up), ``keys`` reads every key once first. Each
process reports its own CPU per get (``time.process_time``, not inflated by
other processes' load) and the share of gets its hot-key table answered.
Run it against another code tree with ``PYTHONPATH=DIR`` (DIR holding a
``filemem/`` package) to compare two versions on the same machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import tempfile
import time
from typing import Any

NS = ("bench",)


def _value(i: int) -> dict[str, Any]:
    return {"task": "login", "ok": True, "n": i, "text": "x" * 100}


def _worker(path: str, wid: int, n: int, nkeys: int, mode: str, barrier: Any, out: Any) -> None:
    import filemem

    with filemem.Store(path, durability="fsync") as s:
        rng = random.Random(1000 + wid)
        keys = [f"k{rng.randrange(nkeys)}" for _ in range(n)]
        warm = [f"k{i}" for i in range(nkeys)] if mode == "keys" else [f"k{rng.randrange(nkeys)}" for _ in range(3000)]
        for k in warm:
            s.get(NS, k)
        barrier.wait()
        hits0 = s._backend.hot_hits  # type: ignore[attr-defined]
        c0, t0 = time.process_time(), time.perf_counter()
        get = s.get
        for k in keys:
            get(NS, k)
        t1, c1 = time.perf_counter(), time.process_time()
        hot = (s._backend.hot_hits - hits0) / n  # type: ignore[attr-defined]
        out.put({"cpu_us": (c1 - c0) / n * 1e6, "t0": t0, "t1": t1, "hot": hot, "module": filemem.__file__})


def _run(path: str, nprocs: int, total: int, nkeys: int, mode: str) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(nprocs), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(path, w, total // nprocs, nkeys, mode, barrier, out)) for w in range(nprocs)
    ]
    for p in procs:
        p.start()
    try:
        rs = [out.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    wall = max(r["t1"] for r in rs) - min(r["t0"] for r in rs)
    return {
        "gets_per_s": round(total / wall),
        "cpu_us_per_get": [round(r["cpu_us"], 2) for r in rs],
        "hot_share": [round(r["hot"], 2) for r in rs],
        "module": rs[0]["module"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gets", type=int, default=40_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--modes", default="sample,keys")
    ap.add_argument("--tmpdir", default=tempfile.gettempdir())
    a = ap.parse_args()
    import filemem

    path = tempfile.mkdtemp(prefix="filemem-diag-", dir=a.tmpdir)
    try:
        with filemem.Store(path, durability="fsync") as s, s.batch() as b:
            for i in range(a.keys):
                b.put(NS, f"k{i}", _value(i))
        for mode in a.modes.split(","):
            for n in (1, 4):
                r = _run(path, n, a.gets, a.keys, mode)
                print(f"{mode:6s} {n}p load {os.getloadavg()[0]:5.1f}: {r}", flush=True)
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
