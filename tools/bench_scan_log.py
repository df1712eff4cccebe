"""scan() and search() beside writing processes (issue 13): latency, and the fold work the reader did.

Usage: ``python tools/bench_scan_log.py [--records 5000] [--writers 2] [--reads 15] [--dir DIR]``.

A store is filled with ``--records`` records in one namespace (folded at
close), then ``--writers`` processes (spawn) put durable records into the
same namespace as fast as they can. Meanwhile this process, holding the store
open read-write like any agent, times ``--reads`` rounds of one whole
``scan()`` and one ``search()``. Printed per operation: p50 and max latency,
and the reader's own fold work from ``store.stats()`` (``folds``,
``records_folded``). On format 2 a reader used to fold the writers' backlog
before each scan or search; it now reads the log's unfolded records in place.
Everything goes through the public API, so the same script measures any
checkout (run it from the checkout's root). Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import filemem  # noqa: E402

NS = ("bench", "scan")


def _writer(path: str, me: int, stop: str) -> None:
    with filemem.Store(path) as s:
        n = 0
        while not os.path.exists(stop):
            n += 1
            s.put(NS, f"w{me}-{n:07d}", {"text": f"written by {me} alpha number {n}", "n": n})


def _ms(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(xs) * 1e3, 1), "max_ms": round(max(xs) * 1e3, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--reads", type=int, default=15)
    ap.add_argument("--dir", default=None, help="where to make the store (default: the system temp dir)")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="filemem-bench-scan-", dir=args.dir)
    path = os.path.join(tmp, "store")
    with filemem.Store(path) as s:
        for start in range(0, args.records, 500):
            with s.batch() as b:
                for i in range(start, min(start + 500, args.records)):
                    b.put(NS, f"k{i:07d}", {"text": f"prefilled alpha record {i}", "n": i})
    stop = os.path.join(tmp, "stop")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, stop)) for w in range(args.writers)]
    scans: list[float] = []
    searches: list[float] = []
    seen: list[int] = []
    try:
        for p in procs:
            p.start()
        with filemem.Store(path) as s:
            time.sleep(1.0)  # the writers are under way
            for _ in range(args.reads):
                t = time.perf_counter()
                n = sum(len(batch) for batch in s.scan(NS, batch_size=500))
                scans.append(time.perf_counter() - t)
                seen.append(n)
                t = time.perf_counter()
                s.search(NS, "alpha", limit=10)
                searches.append(time.perf_counter() - t)
            stats = s.stats()
    finally:
        with open(stop, "w"):
            pass
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join(10)
    out = {
        "format": os.environ.get("FILEMEM_STORE_FORMAT", "default"),
        "writers": args.writers,
        "records_scanned_last": seen[-1],
        "scan": _ms(scans),
        "search": _ms(searches),
        "reader_folds": stats.get("folds"),
        "reader_records_folded": stats.get("records_folded"),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
