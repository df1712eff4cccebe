"""Measure filemem's per-process cache and cross-process visibility (see docs/cache.md).

Usage::

    python tools/bench_cache.py                 # tables, ~1 minute
    python tools/bench_cache.py --json          # the same figures as JSON
    python tools/bench_cache.py --rounds 500 --gets 1000000

Two workloads:

1. ``visibility``: process A (this one) puts a new value; process B (a spawned
   child, ``consistency="cached"``, ``cache_ttl_s=30`` so only events can
   explain a refresh) spins on ``get`` until it returns that value. The figure
   is the time from A's ``put`` returning to B's ``get`` returning the new
   value, on ``CLOCK_MONOTONIC`` (one clock for both processes). Modes:
   ``watch="auto"`` (inotify), ``watch="polling"`` (``poll_interval_s=0.05``),
   and ``strict`` (B reads with ``consistency="strict"``, no cache trust: the
   floor). A spinning B holds the GIL, so its watcher thread waits up to one
   switch interval (5 ms) per wake-up; the ``-idle`` variants let B sleep
   200 us between gets to show the latency without that contention. A
   negative figure means B saw the file before A's put had returned (the
   rename is visible before the put's own bookkeeping ends).
2. ``get``: cached ``get`` of a fresh key in one process against a bare dict
   lookup (and a dict lookup plus the shallow copy a get returns), a strict
   ``get`` and, if installed, an lmdb read transaction with ``json.loads``.
   Reported as ns per call (the best of 10 loops of ``--gets``/10 calls, as
   timeit does, so a preempted loop does not count), gets per second, per-call
   p50/p99 (each call timed with ``perf_counter_ns``; includes the timer's own
   cost, reported as ``timer_ns``) and "N x slower than a dict".

Temp stores go under ``--tmpdir`` (default: ``benchtmp`` next to the
repository), never /tmp.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # so `python tools/bench_cache.py` finds filemem without PYTHONPATH

import filemem  # noqa: E402

NS = ("bench", "facts")
VALUE = {"task": "login", "ok": True, "n": 1, "note": "a small memory record"}
#: The "-idle" modes: B sleeps this long between gets, leaving the GIL to its watcher thread.
IDLE_PAUSE_S = 0.0002


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))
    return ordered[k]


# ---------------------------------------------------------------- visibility


def reader_main(conn: Connection, path: str, options: dict[str, Any], consistency: str, pause_s: float) -> None:
    """Process B: for each round, spin on get until the expected value appears; report when."""
    store = filemem.Store(path, **options)
    try:
        store.get(NS, "k", consistency=consistency)  # starts the watcher (cached modes)
        conn.send("ready")
        while True:
            expected = conn.recv()
            if expected is None:
                return
            store.get(NS, "k", consistency=consistency)
            conn.send("spinning")
            deadline = time.monotonic() + 60
            while True:
                value = store.get(NS, "k", consistency=consistency)
                now = time.monotonic()
                if value == expected or now > deadline:
                    break
                if pause_s:
                    time.sleep(pause_s)
            conn.send((now, value == expected))
    finally:
        store.close()


def visibility(tmp: str, mode: str, rounds: int, durability: str) -> dict[str, Any]:
    path = tempfile.mkdtemp(prefix=f"vis-{mode}-", dir=tmp)
    store_path = os.path.join(path, "store")
    writer = filemem.Store(store_path, watch="off", durability=durability)
    writer.put(NS, "k", 0)
    pause_s = 0.0
    if mode == "strict":
        options: dict[str, Any] = {"watch": "off"}
        consistency = "strict"
    else:
        watch, _, idle = mode.partition("-")
        options = {"watch": watch, "cache_ttl_s": 30.0, "poll_interval_s": 0.05}
        consistency = "cached"
        pause_s = IDLE_PAUSE_S if idle else 0.0
    ctx = mp.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=reader_main, args=(child_conn, store_path, options, consistency, pause_s), daemon=True)
    proc.start()
    child_conn.close()
    latencies: list[float] = []
    missed = 0
    try:
        if not conn.poll(120) or conn.recv() != "ready":
            raise RuntimeError("reader did not start")
        rnd = random.Random(1)
        for i in range(1, rounds + 1):
            conn.send(i)
            if conn.recv() != "spinning":
                raise RuntimeError("reader out of step")
            # Let B settle into its loop; with polling, also land at a random
            # point of the poll interval (else every put falls at the same phase).
            time.sleep(rnd.uniform(0.001, 0.005) + (rnd.uniform(0, 0.05) if mode.startswith("polling") else 0))
            writer.put(NS, "k", i)
            put_returned = time.monotonic()
            seen_at, ok = conn.recv()
            if not ok:
                missed += 1
                continue
            latencies.append(seen_at - put_returned)
        conn.send(None)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
        conn.close()
        writer.close()
        shutil.rmtree(path, ignore_errors=True)
    ms = [x * 1000 for x in latencies]
    return {
        "mode": mode,
        "rounds": rounds,
        "timeouts": missed,
        "p50_ms": pct(ms, 50),
        "p99_ms": pct(ms, 99),
        "max_ms": max(ms),
        "min_ms": min(ms),
        "mean_ms": statistics.fmean(ms),
    }


# ---------------------------------------------------------------- get latency


def _timer_ns(n: int) -> float:
    pc = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t = pc()
        samples.append(pc() - t)
    return statistics.median(samples)


def _measure(fn: Any, n: int, samples: int, chunks: int = 10) -> dict[str, float]:
    """Per-call cost of ``fn``: best and median of ``chunks`` timed loops (best resists a loaded machine)."""
    for _ in range(min(n, 10_000)):  # warm up
        fn()
    size = max(1, n // chunks)
    loops = []
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(size):
            fn()
        loops.append((time.perf_counter() - start) / size)
    best = min(loops)
    pc = time.perf_counter_ns
    each = []
    for _ in range(samples):
        t = pc()
        fn()
        each.append(pc() - t)
    return {
        "ns_per_call": best * 1e9,
        "median_loop_ns_per_call": statistics.median(loops) * 1e9,
        "per_second": 1 / best,
        "p50_ns": pct(each, 50),
        "p99_ns": pct(each, 99),
    }


def gets(tmp: str, n: int) -> dict[str, Any]:
    path = tempfile.mkdtemp(prefix="get-", dir=tmp)
    out: dict[str, Any] = {"calls": n, "timer_ns": _timer_ns(10_000)}
    samples = min(n, 100_000)
    store = filemem.Store(os.path.join(path, "store"), cache_ttl_s=3600.0)
    try:
        store.put(NS, "k", VALUE)
        assert store.get(NS, "k") == VALUE
        time.sleep(0.1)  # let the event of our own put land before we measure
        ns, get = NS, store.get
        d = {(NS, "k"): VALUE}
        key = (NS, "k")
        out["dict"] = _measure(lambda: d[key], n, samples)

        def dict_copy() -> Any:
            return d[key].copy()

        out["dict_copy"] = _measure(dict_copy, n, samples)
        out["cached_get"] = _measure(lambda: get(ns, "k"), n, samples)
        keys = [(("bench", f"ns{i % 100}"), f"k{i}") for i in range(10_000)]
        for kns, k in keys:
            store.put(kns, k, VALUE)
        for kns, k in keys:
            store.get(kns, k)
        order = [keys[i] for i in random.Random(2).choices(range(len(keys)), k=4096)]
        it = iter(())

        def many() -> Any:
            nonlocal it
            try:
                kns, k = next(it)
            except StopIteration:
                it = iter(order)
                kns, k = next(it)
            return get(kns, k)

        out["cached_get_10k_keys"] = _measure(many, n, samples)
        out["strict_get"] = _measure(lambda: get(ns, "k", consistency="strict"), max(1, n // 20), samples // 10)
        stats = store.stats()
        out["cache_stats"] = {k: stats["cache"][k] for k in ("entries", "hits", "misses", "revalidations")}
    finally:
        store.close()
    try:
        import lmdb
    except ImportError:
        out["lmdb"] = None
    else:
        env = lmdb.open(os.path.join(path, "lmdb"), map_size=1 << 26, sync=False)
        with env.begin(write=True) as txn:
            txn.put(b"k", json.dumps(VALUE).encode())

        def lmdb_get() -> Any:
            with env.begin() as txn:
                return json.loads(txn.get(b"k"))

        out["lmdb"] = _measure(lmdb_get, max(1, n // 5), samples // 5)
        env.close()
    shutil.rmtree(path, ignore_errors=True)
    base = out["dict"]["ns_per_call"]
    out["ratios_vs_dict"] = {
        name: out[name]["ns_per_call"] / base
        for name in ("dict_copy", "cached_get", "cached_get_10k_keys", "strict_get", "lmdb")
        if out.get(name)
    }
    return out


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200, help="puts per visibility mode (default 200)")
    ap.add_argument("--gets", type=int, default=300_000, help="calls per get figure (default 300k)")
    ap.add_argument(
        "--modes",
        default="auto,auto-idle,polling,polling-idle,strict",
        help="visibility modes: auto, polling, strict; '-idle': B sleeps 200 us between gets",
    )
    ap.add_argument("--durability", default="flush", choices=["flush", "fsync"], help="the writer's durability")
    ap.add_argument(
        "--tmpdir",
        default=os.environ.get("FILEMEM_BENCH_TMP", os.path.join(os.path.dirname(ROOT), "benchtmp")),
        help="where temp stores go (default: ../benchtmp; never tmpfs)",
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    os.makedirs(cfg.tmpdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="filemem-bench-cache-", dir=cfg.tmpdir)
    try:
        result: dict[str, Any] = {
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "filemem": getattr(filemem, "__version__", "?"),
            },
            "writer_durability": cfg.durability,
            "visibility": [visibility(tmp, m, cfg.rounds, cfg.durability) for m in cfg.modes.split(",") if m],
            "get": gets(tmp, cfg.gets),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if cfg.json:
        print(json.dumps(result, indent=2))
        return 0
    m = result["machine"]
    print(f"filemem cache bench: Python {m['python']}, {m['platform']}, {m['cpus']} CPUs")
    print(f"\nvisibility: A's put returned -> B's get returned the new value (writer durability={cfg.durability})")
    print(f"{'mode':<14}{'rounds':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'min ms':>10}{'timeouts':>10}")
    for v in result["visibility"]:
        print(
            f"{v['mode']:<14}{v['rounds']:>8}{v['p50_ms']:>10.3f}{v['p99_ms']:>10.3f}"
            f"{v['max_ms']:>10.3f}{v['min_ms']:>10.3f}{v['timeouts']:>10}"
        )
    g = result["get"]
    print(f"\nget in one process ({g['calls']} calls; per-call p50/p99 include ~{g['timer_ns']:.0f} ns of timer)")
    print(f"{'what':<22}{'ns/call':>10}{'calls/s':>14}{'p50 ns':>10}{'p99 ns':>10}{'x dict':>9}")
    for name in ("dict", "dict_copy", "cached_get", "cached_get_10k_keys", "strict_get", "lmdb"):
        r = g.get(name)
        if not r:
            continue
        ratio = g["ratios_vs_dict"].get(name, 1.0)
        print(
            f"{name:<22}{r['ns_per_call']:>10.0f}{r['per_second']:>14,.0f}{r['p50_ns']:>10.0f}"
            f"{r['p99_ns']:>10.0f}{ratio:>9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
