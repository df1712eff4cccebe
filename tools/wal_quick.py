"""Quick figures for the write-ahead log (issue 13): store format 1 (today) against format 2 (the log).

The full comparison with lmdb and diskcache lives in tools/bench.py; this
measures the three figures the log was built for, on the real code paths:

* durable puts (``durability="fsync"``) from 4 processes, each its own keys;
* ``batch()`` of 1,000 puts into a store already holding 10,000 records;
* cross-process visibility: a writer puts and notes the time; a reader busy
  in a tight Python loop of cached gets notes when it first sees the value.

    python tools/wal_quick.py                 # both formats, in the system temp dir
    python tools/wal_quick.py --puts 500 --rounds 200
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import filemem
from filemem import _engine


def _fresh(fmt: int) -> str:
    _engine._marker.NEW_STORE_FORMAT = fmt
    path = os.path.join(tempfile.mkdtemp(prefix="filemem-walq-"), "s")
    filemem.Store(path).close()
    return path


def _putter(path: str, me: int, n: int, start: Any, out: Any) -> None:
    with filemem.Store(path) as s:
        start.wait()
        t0 = time.perf_counter()
        for i in range(n):
            s.put(("bench", f"p{me}"), f"k{i}", {"i": i, "text": "some memory text " * 4})
        out.put(time.perf_counter() - t0)


def durable_puts(fmt: int, n: int, procs: int = 4) -> float:
    path = _fresh(fmt)
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=_putter, args=(path, i, n, start, out)) for i in range(procs)]
    for p in ps:
        p.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    start.set()
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    shutil.rmtree(os.path.dirname(path))
    return procs * n / wall


def batch_into_10k(fmt: int) -> float:
    path = _fresh(fmt)
    with filemem.Store(path) as s:
        with s.batch() as b:
            for i in range(10_000):
                b.put(("bench", "big"), f"k{i}", {"i": i, "text": "x" * 40})
        s._engine.settle()
        t0 = time.perf_counter()
        with s.batch() as b:
            for i in range(1_000):
                b.put(("bench", "big"), f"k{i * 7}", {"i": -i, "text": "y" * 40})
        took = time.perf_counter() - t0
    shutil.rmtree(os.path.dirname(path))
    return took


def _reader(path: str, ready: Any, seen: Any, rounds: int) -> None:
    with filemem.Store(path) as s:
        s.get(("bench", "vis"), "k")
        ready.set()
        last = -1
        while last < rounds - 1:
            v = s.get(("bench", "vis"), "k")  # a tight Python loop of cached gets
            if v is not None and v != last:
                last = v
                seen.put((v, time.perf_counter()))


def visibility(fmt: int, rounds: int) -> tuple[float, float]:
    path = _fresh(fmt)
    ctx = mp.get_context("spawn")
    ready, seen = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_reader, args=(path, ready, seen, rounds))
    p.start()
    lags = []
    with filemem.Store(path) as s:
        ready.wait(60)
        for i in range(rounds):
            s.put(("bench", "vis"), "k", i)
            returned = time.perf_counter()  # perf_counter is CLOCK_MONOTONIC: comparable across processes
            while True:
                v, at = seen.get(timeout=30)
                if v == i:
                    lags.append(at - returned)
                    break
            time.sleep(0.002)
    p.join(30)
    shutil.rmtree(os.path.dirname(path))
    lags.sort()
    return statistics.median(lags) * 1e3, lags[int(len(lags) * 0.99) - 1] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--puts", type=int, default=300, help="durable puts per process (default 300)")
    ap.add_argument("--rounds", type=int, default=200, help="visibility rounds (default 200)")
    args = ap.parse_args()
    for fmt in (1, 2):
        name = "format 1 (today)" if fmt == 1 else "format 2 (log)  "
        rate = durable_puts(fmt, args.puts)
        batch = batch_into_10k(fmt)
        p50, p99 = visibility(fmt, args.rounds)
        print(
            f"{name}: durable puts, 4 procs {rate:8.0f}/s | batch 1k into 10k {batch * 1e3:7.1f} ms | "
            f"visibility p50 {p50:6.2f} ms p99 {p99:6.2f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
