"""Measure the async twin (see docs/async.md).

Usage::

    python tools/bench_async.py                      # all three parts, ~1-2 minutes
    python tools/bench_async.py --scan-records 1000000
    python tools/bench_async.py --json

Three parts:

1. ``throughput``: the same work done by 1, 10 and 100 concurrent asyncio
   tasks on one ``AsyncStore`` and by 1, 10 and 100 threads sharing one sync
   ``Store``. Workloads: ``put`` (distinct keys, ``durability="fsync"``, the
   default), ``put-flush`` (``durability="flush"``), ``update`` of one hot key
   (``flush``: every call serialises on one lock), ``get`` (cached reads of
   existing keys). Reported as ops/s and the async/threads ratio.
2. ``aiofiles``: reading every shard file of a namespace concurrently, with
   aiofiles (open/read per file, each hop a thread round trip) against one
   worker-thread job per file (``run_in_executor(open+read)``) and the store's
   own lock-free ``items()`` in one job: does aiofiles buy anything?
3. ``scan``: peak RSS of a fresh process that streams a namespace of
   ``--scan-records`` records with ``AsyncStore.scan`` (and, for contrast,
   one that loads it whole with ``items()``), from ``ru_maxrss``.

Temp stores go under ``--tmpdir`` (default: ``benchtmp`` in the checkout,
created on demand), never /tmp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import filemem  # noqa: E402
from filemem.aio import AsyncStore  # noqa: E402

NS = ("bench", "async")
VALUE = {"task": "login", "ok": True, "n": 1, "note": "a small memory record"}


# ---------------------------------------------------------------------- throughput


def _sync_run(store: filemem.Store, workers: int, ops: int, call: Callable[[filemem.Store, int], Any]) -> float:
    per = ops // workers
    barrier = threading.Barrier(workers + 1)

    def work(w: int) -> None:
        barrier.wait()
        for i in range(per):
            call(store, w * per + i)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return per * workers / (time.perf_counter() - t0)


def _async_run(store: AsyncStore, tasks: int, ops: int, call: Callable[[AsyncStore, int], Awaitable[Any]]) -> float:
    per = ops // tasks

    async def work(w: int) -> None:
        for i in range(per):
            await call(store, w * per + i)

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(work(w) for w in range(tasks)))
        return per * tasks / (time.perf_counter() - t0)

    return asyncio.run(main())


WORKLOADS: dict[str, tuple[dict[str, Any], Any, Any]] = {
    "put": (
        {},
        lambda s, i: s.put(NS, f"k{i}", VALUE),
        lambda s, i: s.put(NS, f"k{i}", VALUE),
    ),
    "put-flush": (
        {"durability": "flush"},
        lambda s, i: s.put(NS, f"k{i}", VALUE),
        lambda s, i: s.put(NS, f"k{i}", VALUE),
    ),
    "update-hot": (
        {"durability": "flush"},
        lambda s, i: s.update(NS, "hot", lambda n: (n or 0) + 1),
        lambda s, i: s.update(NS, "hot", lambda n: (n or 0) + 1),
    ),
    "get": (
        {"durability": "flush"},
        lambda s, i: s.get(NS, f"k{i % 1000}"),
        lambda s, i: s.get(NS, f"k{i % 1000}"),
    ),
}


def throughput(tmp: str, ops: dict[str, int], levels: list[int], max_in_flight: int) -> list[dict[str, Any]]:
    rows = []
    for name, (kwargs, sync_call, async_call) in WORKLOADS.items():
        n = ops[name]
        for level in levels:
            path = tempfile.mkdtemp(dir=tmp)
            with filemem.Store(os.path.join(path, "s"), **kwargs) as s:
                if name == "get":
                    with s.batch() as b:
                        for i in range(1000):
                            b.put(NS, f"k{i}", VALUE)
                    for i in range(1000):
                        s.get(NS, f"k{i}")
                sync_ops = _sync_run(s, level, n, sync_call)
            shutil.rmtree(path)
            path = tempfile.mkdtemp(dir=tmp)
            store = AsyncStore(os.path.join(path, "s"), max_in_flight=max_in_flight, **kwargs)
            try:
                if name == "get":
                    with store.sync.batch() as b:
                        for i in range(1000):
                            b.put(NS, f"k{i}", VALUE)
                    for i in range(1000):
                        store.sync.get(NS, f"k{i}")
                async_ops = _async_run(store, level, n, async_call)
            finally:
                asyncio.run(store.close())
            shutil.rmtree(path)
            rows.append(
                {
                    "workload": name,
                    "concurrency": level,
                    "ops": n,
                    "async_ops_s": round(async_ops),
                    "threads_ops_s": round(sync_ops),
                    "ratio_async_over_threads": round(async_ops / sync_ops, 2),
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------------- aiofiles


def aiofiles_compare(tmp: str, records: int, rounds: int) -> dict[str, Any]:
    try:
        import aiofiles
    except ImportError:
        return {"skipped": "aiofiles not installed"}
    path = os.path.join(tempfile.mkdtemp(dir=tmp), "s")
    with filemem.Store(path, durability="flush") as s:
        with s.batch() as b:
            for i in range(records):
                b.put(NS, f"k{i}", VALUE)
        view = s._engine.view(NS)
        view.refresh()
        files = [view.shard_path(p) for p in sorted(view.existing)]

    async def with_aiofiles() -> int:
        async def one(f: str) -> int:
            async with aiofiles.open(f, "rb") as fh:
                return len(await fh.read())

        return sum(await asyncio.gather(*(one(f) for f in files)))

    def read(f: str) -> int:
        with open(f, "rb") as fh:
            return len(fh.read())

    async def with_one_job_each() -> int:
        loop = asyncio.get_running_loop()
        return sum(await asyncio.gather(*(loop.run_in_executor(None, read, f) for f in files)))

    def best(fn: Callable[[], Awaitable[int]]) -> float:
        async def main() -> float:
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                await fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        return asyncio.run(main())

    t_aiofiles = best(with_aiofiles)
    t_job = best(with_one_job_each)

    store = AsyncStore(path, consistency="strict")

    async def items_job() -> int:
        return len(await store.items(NS))

    try:
        t_items = best(items_job)
    finally:
        asyncio.run(store.close())
    shutil.rmtree(os.path.dirname(path))
    return {
        "shard_files": len(files),
        "records": records,
        "aiofiles_ms": round(t_aiofiles * 1000, 2),
        "one_thread_job_per_file_ms": round(t_job * 1000, 2),
        "store_items_in_one_job_ms": round(t_items * 1000, 2),
        "aiofiles_over_job": round(t_aiofiles / t_job, 2),
    }


# ---------------------------------------------------------------------- scan RSS


def _peak_rss_mb() -> float:
    """Peak RSS of this process: VmHWM on Linux (ru_maxrss survives exec, so a
    spawned child would report its parent's peak), ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_child(path: str, how: str, conn: Any) -> None:
    store = AsyncStore(path, readonly=True)
    base = _peak_rss_mb()

    async def main() -> int:
        n = 0
        if how == "scan":
            async for batch in store.scan(NS, batch_size=100):
                n += len(batch)
        else:
            n = len(await store.items(NS))
        await store.close()
        return n

    t0 = time.perf_counter()
    n = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    peak = _peak_rss_mb()
    conn.send(
        {
            "records": n,
            "baseline_rss_mb": round(base, 1),
            "peak_rss_mb": round(peak, 1),
            "seconds": round(elapsed, 1),
        }
    )


def scan_rss(tmp: str, records: int, with_items: bool) -> dict[str, Any]:
    path = os.path.join(tempfile.mkdtemp(dir=tmp), "s")
    t0 = time.perf_counter()
    with filemem.Store(path, durability="flush") as s:
        # A batch rewrites every shard it touches, and random keys touch them
        # all: a few large batches write far less than many small ones.
        chunk = max(25_000, records // 4)
        for start in range(0, records, chunk):
            with s.batch() as b:
                for i in range(start, min(records, start + chunk)):
                    b.put(NS, f"k{i:08d}", {**VALUE, "n": i})
        view = s._engine.view(NS)
        view.refresh()
        shard_files = len(view.existing)
    fill_s = time.perf_counter() - t0
    ctx = mp.get_context("spawn")
    out: dict[str, Any] = {"records": records, "shard_files": shard_files, "fill_seconds": round(fill_s, 1)}
    for how in ["scan", "items"] if with_items else ["scan"]:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_rss_child, args=(path, how, child))
        p.start()
        out[how] = parent.recv()
        p.join()
    shutil.rmtree(os.path.dirname(path))
    return out


# ---------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tmpdir", default=os.path.join(ROOT, "benchtmp"))
    ap.add_argument("--ops", type=int, default=2000, help="ops per throughput run (fsync puts: a quarter)")
    ap.add_argument("--levels", default="1,10,100")
    ap.add_argument("--max-in-flight", type=int, default=16)
    ap.add_argument("--scan-records", type=int, default=200_000)
    ap.add_argument("--no-items", action="store_true", help="skip the items() contrast in the RSS part")
    ap.add_argument("--parts", default="throughput,aiofiles,scan")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.tmpdir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=args.tmpdir)
    parts = args.parts.split(",")
    report: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
        "command": " ".join(["python", *sys.argv]),
    }
    try:
        if "throughput" in parts:
            levels = [int(x) for x in args.levels.split(",")]
            ops = {"put": max(100, args.ops // 4), "put-flush": args.ops, "update-hot": args.ops, "get": args.ops * 10}
            report["throughput"] = throughput(tmp, ops, levels, args.max_in_flight)
        if "aiofiles" in parts:
            report["aiofiles"] = aiofiles_compare(tmp, 20_000, 5)
        if "scan" in parts:
            report["scan"] = scan_rss(tmp, args.scan_records, not args.no_items)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"# {report['machine']}\n# {report['command']}")
    for row in report.get("throughput", []):
        print(
            f"{row['workload']:<11} x{row['concurrency']:<4} async {row['async_ops_s']:>8}/s"
            f"  threads {row['threads_ops_s']:>8}/s  ratio {row['ratio_async_over_threads']}"
        )
    if "aiofiles" in report:
        print("aiofiles:", report["aiofiles"])
    if "scan" in report:
        print("scan:", report["scan"])


if __name__ == "__main__":
    main()
