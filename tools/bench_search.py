"""Measure Store.search at growing sizes, in a warm and a fresh process (see docs/search.md).

Usage::

    python tools/bench_search.py                         # 1k, 10k, 100k memories
    python tools/bench_search.py --sizes 1000,10000 --queries 100 --json

For each size (the same store grows from one size to the next, filled in
batches with ``durability="flush"``):

- ``build``: the first search of a store with no index file (every shard
  parsed and indexed, the index file written);
- ``warm``: p50/p99 of ``--queries`` keyword searches (1-3 random words,
  ``limit=10``) in the process that built the index; also a filter-only
  search and a keyword search with a filter;
- ``fresh``: ``--fresh`` new processes, each opening a new Store and timing
  its *first* keyword search, which must come from the shared index files
  (the child checks that it built no segment). p99 of a handful of samples is
  their maximum; the figure includes the child's reading of the index file
  but not interpreter start-up.

Then the writer overhead of index maintenance, at the largest size: mean and
p50 of ``--puts`` single puts (``durability="fsync"``) into the searched
namespace (its index file exists, so every put re-indexes the shard it wrote
and rewrites the file at most once a second) against the same puts into a
namespace nobody searches (one ``stat`` per put, nothing else).

Records look like agent memories: ``{"task": 8-15 words from a 2000-word
Zipf-ish vocabulary, "ok": bool, "n": int}``. Temp stores go under
``--tmpdir`` (default: benchtmp next to the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import filemem  # noqa: E402

NS = ("bench", "mem")
VOCAB = [f"w{i}" for i in range(2000)]
WEIGHTS = [1.0 / (i + 1) for i in range(2000)]


def make_value(rng: random.Random, i: int) -> dict[str, Any]:
    words = rng.choices(VOCAB, weights=WEIGHTS, k=rng.randint(8, 15))
    return {"task": " ".join(words), "ok": rng.random() < 0.7, "n": i % 1000}


def make_query(rng: random.Random) -> str:
    return " ".join(rng.choices(VOCAB[20:600], k=rng.randint(1, 3)))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def ms(x: float) -> float:
    return round(x * 1000, 3)


def fill(path: str, start: int, stop: int, batch: int) -> float:
    rng = random.Random(start)
    t0 = time.perf_counter()
    with filemem.Store(path, durability="flush", watch="off", index_on_write=False) as s:
        for lo in range(start, stop, batch):
            with s.batch() as b:
                for i in range(lo, min(stop, lo + batch)):
                    b.put(NS, f"m{i}", make_value(rng, i))
    return time.perf_counter() - t0


FRESH_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import filemem
t0 = time.perf_counter()
s = filemem.Store(sys.argv[2], watch="off")
t1 = time.perf_counter()
hits = s.search(("bench",), sys.argv[3], limit=10)
t2 = time.perf_counter()
c = s._searcher.counters
s.close()
print(json.dumps({"open_s": t1 - t0, "search_s": t2 - t1, "built": c["segments_built"], "hits": len(hits)}))
"""


def fresh_samples(path: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        got = subprocess.run(
            [sys.executable, "-c", FRESH_CHILD, ROOT, path, make_query(rng)],
            check=True,
            capture_output=True,
            text=True,
        )
        out.append(json.loads(got.stdout))
    return out


def bench_size(path: str, size: int, queries: int, fresh: int) -> dict[str, Any]:
    rng = random.Random(size)
    shutil.rmtree(os.path.join(path, "index"), ignore_errors=True)
    with filemem.Store(path, watch="off") as s:
        t0 = time.perf_counter()
        s.search(("bench",), "w100", limit=10)
        build = time.perf_counter() - t0
        lat = []
        for _ in range(queries):
            q = make_query(rng)
            t0 = time.perf_counter()
            s.search(("bench",), q, limit=10)
            lat.append(time.perf_counter() - t0)
        flt = []
        both = []
        for _ in range(max(5, queries // 10)):
            t0 = time.perf_counter()
            s.search(("bench",), filter={"n": {"$lt": 10}, "ok": True}, limit=10)
            flt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            s.search(("bench",), make_query(rng), filter={"ok": True}, limit=10)
            both.append(time.perf_counter() - t0)
        shards = len(list(s._engine.view(NS).existing))
    idx_bytes = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(path, "index")) for f in fs
    )
    samples = fresh_samples(path, fresh, rng)
    assert all(x["built"] == 0 for x in samples), samples  # the first query used the shared files
    fr = [x["search_s"] for x in samples]
    return {
        "size": size,
        "shards": shards,
        "index_bytes": idx_bytes,
        "build_ms": ms(build),
        "warm_p50_ms": ms(pct(lat, 50)),
        "warm_p99_ms": ms(pct(lat, 99)),
        "filter_only_p50_ms": ms(pct(flt, 50)),
        "query_and_filter_p50_ms": ms(pct(both, 50)),
        "fresh_p50_ms": ms(pct(fr, 50)),
        "fresh_p99_ms": ms(max(fr)),
        "fresh_open_p50_ms": ms(pct([x["open_s"] for x in samples], 50)),
        "fresh_samples": len(fr),
    }


def bench_writers(path: str, puts: int) -> dict[str, Any]:
    rng = random.Random(1)
    out: dict[str, Any] = {"puts": puts}
    with filemem.Store(path, watch="off") as s:
        s.search(("bench",), "w1", limit=1)  # the searched namespace has its index file
        for label, ns in (("unsearched", ("bench-w", "other")), ("searched", NS)):
            if label == "unsearched":
                for i in range(200):  # a namespace of some size nobody searches
                    s.put(ns, f"pre{i}", make_value(rng, i))
            times = []
            for i in range(puts):
                v = make_value(rng, i)
                t0 = time.perf_counter()
                s.put(ns, f"m{rng.randrange(10**9)}", v)
                times.append(time.perf_counter() - t0)
            out[f"{label}_mean_ms"] = ms(statistics.fmean(times))
            out[f"{label}_p50_ms"] = ms(pct(times, 50))
            out[f"{label}_p99_ms"] = ms(pct(times, 99))
        out["segments_built_on_write"] = s._searcher.counters["segments_built_on_write"]
        out["index_writes"] = s._searcher.counters["index_writes"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--fresh", type=int, default=10)
    ap.add_argument("--puts", type=int, default=200)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--tmpdir", default=os.path.join(os.path.dirname(ROOT), "benchtmp"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.tmpdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bench-search-", dir=args.tmpdir)
    path = os.path.join(tmp, "store")
    results: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(), "sizes": []}
    try:
        have = 0
        for size in [int(x) for x in args.sizes.split(",")]:
            fill_s = fill(path, have, size, args.batch)
            have = size
            row = bench_size(path, size, args.queries, args.fresh)
            row["fill_s"] = round(fill_s, 1)
            results["sizes"].append(row)
            if not args.json:
                print(json.dumps(row), flush=True)
        results["writers"] = bench_writers(path, args.puts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(json.dumps(results["writers"]))


if __name__ == "__main__":
    main()
