"""Measure the collector (see docs/collector.md).

Usage::

    python tools/bench_collector.py                    # all figures at a modest size
    python tools/bench_collector.py --records 20000 --latency 100000 --queued 1000000 --json
    python tools/bench_collector.py --only latency --no-burst --pace-us 100 1000   # paced rows only
    python tools/bench_collector.py --code ../old --only latency --no-burst   # filemem from ../old/filemem

Figures:

1. ``latency``: ``collect()`` with the journal on, each call timed with
   ``perf_counter_ns`` (p50 / p99 / p99.9 / max, in microseconds), while the
   journal and apply threads run. ``burst``: back-to-back calls;
   ``paced_100us`` / ``paced_1ms``: one call every 100 us / 1 ms, sleeping
   in between (an agent that waits on I/O between records; the sleep leaves
   the GIL to the writer threads, as real I/O would). ``*_writers_parked``:
   the same with the journal and apply threads parked (blocked in their
   first write until the timing ends), so no other thread wants the GIL:
   the call's own cost at that pacing, to tell it from the writers' share.
   Burst rows also give ``cpu_us_per_call``: the calling thread's CPU time
   per call (``thread_time``), which time taken by other processes does
   not inflate. Each row also counts the calls over 50 us, and of those the
   ones that overlapped a garbage collection run in the calling thread and
   the ones that found the collector's lock held by a writer thread.
   ``floor_*``: the machine's floor, the same pacing loop timing a trivial
   Python call instead (a function that stores its arguments in a dict: the
   call ``collect()`` is, with none of its work), no store and no other
   thread: what any Python call costs after that sleep on this machine, so
   the part of a paced row that is ours is the difference.
   ``--pace-us`` chooses the pacings (default 100 and 1000); ``--no-burst``,
   ``--no-parked`` and ``--no-floor`` skip rows. Each row records the 1-minute load average
   when it ended (the machine may be shared).
2. ``throughput``: N processes each collect ``--records`` records into their
   own namespace and ``flush()``; records/s = all records / wall time from the
   start signal until the last flush returned (durable in the store, store
   ``durability="fsync"``). Beside it, in the same run: lmdb with
   ``sync=False`` (one put per write transaction, as a caller without a
   collector would do; and one transaction per ``batch_size`` records).
3. ``visibility``: time from ``collect()`` returning in this process to a
   ``consistency="strict"`` get in another process seeing the record
   (CLOCK_MONOTONIC is one clock for both).
4. ``memory``: a child process whose writer is stalled (its engine apply
   blocks) collects ``--queued`` records; RSS before, peak RSS after (VmHWM
   on Linux: ru_maxrss would include the parent's peak, which Linux carries
   across fork and exec) and the journal's size.

Temp stores go under ``--tmpdir`` (default: the system temp directory).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
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
from collections.abc import Iterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _code_dir(argv: list[str]) -> str:
    """``--code DIR``: the directory holding the ``filemem/`` to measure (default: this checkout).

    Read before ``filemem`` is imported (argparse runs later), so two trees can
    be measured by one tool, alternating: copy each tree's ``filemem/`` into its
    own directory and pass it here. Spawned children get the same argv.
    """
    for i, arg in enumerate(argv):
        if arg == "--code" and i + 1 < len(argv):
            return os.path.abspath(argv[i + 1])
        if arg.startswith("--code="):
            return os.path.abspath(arg.split("=", 1)[1])
    return ROOT


CODE = _code_dir(sys.argv)
if CODE not in sys.path:
    sys.path.insert(0, CODE)

import filemem  # noqa: E402

VALUE = {"task": "login", "ok": True, "n": 1, "note": "a small memory record"}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---------------------------------------------------------------- 1. latency


@contextlib.contextmanager
def _parked_writers() -> Iterator[threading.Event]:
    """Park the collector's journal and apply threads (they block in their first write) until the event is set.

    With them parked, a paced collect() runs with no other thread wanting
    the GIL: what is left is the call's own cost at that pacing.
    """
    from filemem._collector import _journal
    from filemem._engine import Engine

    gate = threading.Event()
    real_append, real_apply = _journal.JournalFile.append, Engine.apply

    def append(self: Any, data: bytes | bytearray) -> None:
        gate.wait()
        real_append(self, data)

    def apply(self: Engine, ops: list[Any]) -> list[Any]:
        gate.wait()
        return real_apply(self, ops)

    real_puts = getattr(Engine, "apply_puts", None)  # (absent in code before it: --code of an older ref)

    def apply_puts(self: Engine, puts: list[Any], extra: Any = ()) -> list[Any]:
        gate.wait()
        assert real_puts is not None
        return list(real_puts(self, puts, extra))

    _journal.JournalFile.append = append  # type: ignore[method-assign]
    Engine.apply = apply  # type: ignore[method-assign]
    if real_puts is not None:
        Engine.apply_puts = apply_puts  # type: ignore[method-assign]
    try:
        yield gate
    finally:
        _journal.JournalFile.append = real_append  # type: ignore[method-assign]
        Engine.apply = real_apply  # type: ignore[method-assign]
        if real_puts is not None:
            Engine.apply_puts = real_puts  # type: ignore[method-assign]
        gate.set()


def _latency_row(times: list[float], count: int) -> dict[str, Any]:
    """The percentiles every latency row reports (microseconds), and the load they were taken at."""
    return {
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "calls": count,
        "p50_us": round(pct(times, 0.5), 2),
        "p99_us": round(pct(times, 0.99), 2),
        "p999_us": round(pct(times, 0.999), 2),
        "max_us": round(max(times), 1),
    }


def _pace_name(us: int) -> str:
    return f"paced_{us // 1000}ms" if us % 1000 == 0 else f"paced_{us}us"


def latency_modes(pace_us: list[int], *, burst: bool, parked: bool) -> list[tuple[str, float, bool]]:
    """(name, seconds between calls, writers parked) for each latency row asked for."""
    modes = [("burst", 0.0, False)] if burst else []
    modes += [(_pace_name(us), us / 1e6, False) for us in pace_us]
    if parked:
        modes += [("burst_writers_parked", 0.0, True)] if burst else []
        modes += [(_pace_name(us) + "_writers_parked", us / 1e6, True) for us in pace_us]
    return modes


def _paced_count(n: int, gap_s: float) -> int:
    """Calls timed in a row: ``n`` back to back, fewer when paced (a row lasts ~2 s per 100,000 of ``n``)."""
    return n if not gap_s else max(1000, int(n * 0.0001 / gap_s) // 5)


def bench_floor(n: int, pace_us: list[int]) -> dict[str, Any]:
    """The machine's floor for the paced rows: the same loop timing a trivial Python call, no store, no thread.

    The call takes ``collect()``'s arguments and stores them in a dict (a
    function call and a dict insert, about 0.1 us when warm): whatever it
    costs after the sleep is the wake-up of this thread on this machine
    (caches and branch predictors gone cold, the CPU's frequency, the
    scheduler), which no change to the collector can remove.
    """
    out: dict[str, Any] = {}
    ns = ("bench", "events")
    for us in pace_us:
        gap_s = us / 1e6
        seen: dict[str, Any] = {}

        def trivial(namespace: tuple[str, ...], key: str, value: Any, seen: dict[str, Any] = seen) -> int:
            seen[key] = value
            return len(seen)

        for i in range(1000):  # warm up, as the collector rows do
            trivial(ns, f"w{i}", VALUE)
        count = _paced_count(n, gap_s)
        times: list[float] = []
        pc = time.perf_counter_ns
        next_at = time.perf_counter()
        for i in range(count):
            next_at += gap_s
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = pc()
            trivial(ns, f"k{i}", VALUE)
            t1 = pc()
            times.append((t1 - t0) / 1000)
        out[f"floor_{_pace_name(us)}"] = {
            **_latency_row(times, count),
            "over_50us": sum(1 for t in times if t > 50),
        }
    return out


def bench_latency(tmp: str, n: int, modes: list[tuple[str, float, bool]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, gap_s, parked in modes:
        path = os.path.join(tmp, f"lat-{mode}")
        with contextlib.ExitStack() as stack:
            if parked:
                gate = stack.enter_context(_parked_writers())
            store = stack.enter_context(filemem.Store(path))
            c = stack.enter_context(store.collector(max_queue=max(n, 1000) * 2))
            ns = ("bench", "events")
            for i in range(1000):  # warm up caches
                c.collect(ns, f"w{i}", VALUE)
            if not parked:
                c.flush()
            times: list[float] = []
            spans: list[tuple[int, int, bool]] = []  # (start, end, lock held at entry) of calls over 50 us
            gcs: list[tuple[int, int]] = []  # garbage collections run in this thread
            pc = time.perf_counter_ns
            me = threading.get_ident()
            gc_start = [0]

            def on_gc(phase: str, info: dict[str, Any], me: int = me, gcs: Any = gcs, gc_start: Any = gc_start) -> None:
                if threading.get_ident() == me:
                    if phase == "start":
                        gc_start[0] = time.perf_counter_ns()
                    else:
                        gcs.append((gc_start[0], time.perf_counter_ns()))

            gc.callbacks.append(on_gc)
            lock = c._lock
            count = _paced_count(n, gap_s)
            next_at = time.perf_counter()
            cpu0 = time.thread_time_ns()
            for i in range(count):
                if gap_s:
                    # Sleep, as an agent waiting on I/O would: the GIL is free
                    # for the writer threads meanwhile.
                    next_at += gap_s
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                held = lock.locked()
                t0 = pc()
                c.collect(ns, f"k{i}", VALUE)
                t1 = pc()
                times.append((t1 - t0) / 1000)
                if t1 - t0 > 50_000:
                    spans.append((t0, t1, held))
            cpu_us = (time.thread_time_ns() - cpu0) / count / 1000
            gc.callbacks.remove(on_gc)
            if parked:
                gate.set()
            c.flush()
        out[mode] = {
            **_latency_row(times, count),
            # Of the calls over 50 us: how many overlapped a garbage collection run in the
            # calling thread, and how many found the collector's lock held by a writer thread.
            "over_50us": len(spans),
            "over_50us_with_gc": sum(1 for a, b, _ in spans if any(g0 < b and g1 > a for g0, g1 in gcs)),
            "over_50us_lock_held_at_entry": sum(1 for *_, held in spans if held),
        }
        if not gap_s:
            # This thread's CPU time per call (the timing loop's own few hundred ns included):
            # unlike the wall-clock percentiles, time other processes took the CPU is not in it.
            out[mode]["cpu_us_per_call"] = round(cpu_us, 2)
    return out


# ---------------------------------------------------------------- 2. throughput


def _collector_child(path: str, proc: int, records: int, batch: int, go: Any, done: Any) -> None:
    with filemem.Store(path) as store, store.collector(batch_size=batch, max_queue=max(records, batch)) as c:
        ns = ("bench", f"p{proc}")
        go.wait()
        for i in range(records):
            c.collect(ns, f"k{i}", VALUE)
        c.flush()
        done.put(time.monotonic())


def _lmdb_child(path: str, proc: int, records: int, per_txn: int, go: Any, done: Any) -> None:
    import lmdb

    env = lmdb.open(path, sync=False, map_size=1 << 31, max_dbs=0)
    go.wait()
    i = 0
    while i < records:
        with env.begin(write=True) as txn:
            for j in range(i, min(records, i + per_txn)):
                txn.put(f"p{proc}/k{j}".encode(), json.dumps(VALUE).encode())
        i += per_txn
    env.close()
    done.put(time.monotonic())


def _run_procs(target: Any, path: str, procs: int, records: int, arg: int) -> float:
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    done = ctx.Queue()
    ps = [ctx.Process(target=target, args=(path, p, records, arg, go, done)) for p in range(procs)]
    for p in ps:
        p.start()
    time.sleep(1.5)  # let every child import and open its store
    start = time.monotonic()
    go.set()
    ends = [done.get(timeout=600) for _ in ps]
    for p in ps:
        p.join(60)
    return procs * records / (max(ends) - start)


def bench_throughput(tmp: str, records: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for procs in (1, 4):
        row: dict[str, Any] = {}
        path = os.path.join(tmp, f"tp-{procs}")
        filemem.Store(path).close()
        row["filemem_collector_fsync"] = round(_run_procs(_collector_child, path, procs, records, batch))
        try:
            import lmdb  # noqa: F401

            for label, per_txn in (("lmdb_sync_off_txn_per_record", 1), ("lmdb_sync_off_txn_per_batch", batch)):
                lpath = os.path.join(tmp, f"lmdb-{procs}-{per_txn}")
                os.makedirs(lpath, exist_ok=True)
                row[label] = round(_run_procs(_lmdb_child, lpath, procs, records, per_txn))
        except ImportError:
            row["lmdb"] = "not installed"
        out[f"{procs}_process" + ("es" if procs > 1 else "")] = row
    return out


# ---------------------------------------------------------------- 3. visibility


def _watcher_child(path: str, n: int, conn: Any) -> None:
    with filemem.Store(path) as store:
        conn.send("ready")
        for i in range(n):
            key = conn.recv()
            while store.get("vis", key, consistency="strict") is None:
                pass
            conn.send(time.monotonic())
            del i


def bench_visibility(tmp: str, n: int) -> dict[str, Any]:
    path = os.path.join(tmp, "vis")
    filemem.Store(path).close()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_watcher_child, args=(path, n, child))
    p.start()
    lags: list[float] = []
    with filemem.Store(path) as store, store.collector() as c:
        assert parent.recv() == "ready"
        for i in range(n):
            key = f"k{i}"
            parent.send(key)
            time.sleep(0.002)
            c.collect("vis", key, VALUE)
            t0 = time.monotonic()
            seen = parent.recv()
            lags.append((seen - t0) * 1000)
            time.sleep(0.01)
    p.join(30)
    return {
        "samples": n,
        "p50_ms": round(pct(lags, 0.5), 2),
        "p99_ms": round(pct(lags, 0.99), 2),
        "max_ms": round(max(lags), 2),
    }


# ---------------------------------------------------------------- 4. memory


def _rss_kb() -> int:
    """Resident set size now, in KiB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_kb() -> int:
    """Peak RSS of this process in KiB: VmHWM (starts afresh at exec); ru_maxrss where there is no /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _memory_child(path: str, queued: int, conn: Any) -> None:
    from filemem._engine import Engine

    gate = threading.Event()
    real = Engine.apply

    def stalled(self: Engine, ops: list[Any]) -> list[Any]:
        if any(op.namespace[:1] == ("mem",) for op in ops):
            gate.wait()
        return real(self, ops)

    Engine.apply = stalled  # type: ignore[method-assign]
    real_puts = getattr(Engine, "apply_puts", None)  # (absent in code before it: --code of an older ref)
    if real_puts is not None:

        def stalled_puts(self: Engine, puts: list[Any], extra: Any = ()) -> list[Any]:
            if any(ns[:1] == ("mem",) for ns, _, _ in puts):
                gate.wait()
            assert real_puts is not None
            return list(real_puts(self, puts, extra))

        Engine.apply_puts = stalled_puts  # type: ignore[method-assign]
    store = filemem.Store(path)
    c = store.collector(max_queue=queued + 10, batch_size=1000)
    before = _rss_kb()
    t = time.monotonic()
    for i in range(queued):
        c.collect("mem", f"k{i}", {"i": i, "note": "a small memory record"})
    elapsed = time.monotonic() - t
    while c.stats()["accepted"] < queued:
        time.sleep(0.05)
    after = max(_rss_kb(), _peak_kb())
    conn.send(
        {
            "queued": queued,
            "rss_before_mb": round(before / 1024, 1),  # RSS before collecting
            "peak_rss_mb": round(after / 1024, 1),
            "bytes_per_record": round((after - before) * 1024 / queued),
            "journal_mb": round(os.path.getsize(c.stats()["journal"]) / 1e6, 1),
            "collect_rate_per_s": round(queued / elapsed),
        }
    )
    os._exit(0)  # the stalled writer never finishes: leave without draining


def bench_memory(tmp: str, queued: int) -> dict[str, Any]:
    path = os.path.join(tmp, "mem")
    filemem.Store(path).close()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_memory_child, args=(path, queued, child))
    p.start()
    got: dict[str, Any] = parent.recv()
    p.join(60)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=int, default=100_000, help="collect() calls timed (burst)")
    ap.add_argument("--records", type=int, default=20_000, help="records per process for throughput")
    ap.add_argument("--batch", type=int, default=1000, help="collector batch_size")
    ap.add_argument("--visibility", type=int, default=100, help="samples of collect-to-visible")
    ap.add_argument("--queued", type=int, default=1_000_000, help="records queued for the memory figure")
    ap.add_argument(
        "--pace-us",
        type=int,
        nargs="*",
        default=[100, 1000],
        help="paced latency rows: one collect() every this many microseconds (default: 100 1000; none: no paced rows)",
    )
    ap.add_argument("--no-burst", action="store_true", help="skip the back-to-back latency row")
    ap.add_argument("--no-parked", action="store_true", help="skip the writers-parked control rows")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor rows (a trivial call, paced alike)")
    ap.add_argument("--only", choices=["latency", "throughput", "visibility", "memory"], action="append")
    ap.add_argument("--code", metavar="DIR", help="import filemem from DIR/filemem (A/B runs of two trees)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tmpdir", default=tempfile.gettempdir(), help="base directory for temp stores")
    args = ap.parse_args()
    os.makedirs(args.tmpdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bench-collector-", dir=args.tmpdir)
    only = set(args.only or ["latency", "throughput", "visibility", "memory"])
    results: dict[str, Any] = {
        "module": filemem.__file__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        if "latency" in only:
            modes = latency_modes(args.pace_us, burst=not args.no_burst, parked=not args.no_parked)
            results["latency"] = bench_latency(tmp, args.latency, modes)
            if not args.no_floor:
                results["latency"].update(bench_floor(args.latency, args.pace_us))
        if "throughput" in only:
            results["throughput"] = bench_throughput(tmp, args.records, args.batch)
        if "visibility" in only:
            results["visibility"] = bench_visibility(tmp, args.visibility)
        if "memory" in only:
            results["memory"] = bench_memory(tmp, args.queued)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for section, body in results.items():
        if not isinstance(body, dict):
            print(f"{section}: {body}")
            continue
        print(f"\n[{section}]")
        for k, v in body.items():
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
