"""The write-path-v2 workloads of tools/bench.py (issue 13): collector, visibility, fold under load.

Not run alone: ``tools/bench.py`` imports this module and runs these beside
its own workloads (``--workloads collector,visibility,fold``). Everything
goes through filemem's public API (``Store``, ``store.collector()``,
``store.stats()``), so the same code measures today's engine and the
write-ahead-log engine. What only a log engine has (fold counters, the log's
size) is detected from what the store reports: ``store.stats()`` keys
``folds`` / ``records_folded`` and a ``wal/`` directory in the store. Without
them the figures print as "n/a (no log)".

5. ``collector``: 1 and 4 processes (spawn) each ``collect()`` their own
   records into one store (``durability="fsync"``) and ``flush()``; the rate
   is all records / (last flush returned - start signal). Beside it in the
   same run: lmdb ``sync=False`` with one write transaction per record.
6. ``visibility``: a writer process puts a new value of one key every few
   milliseconds and notes ``time.monotonic_ns()`` when each ``put`` returned;
   a reader process spins in a tight Python loop of cached ``get`` calls
   (default consistency) and notes ``monotonic_ns()`` when it first sees each
   value. Lag = seen - returned (one machine, one clock; negative: seen before
   the put returned, e.g. during its directory fsync).
7. ``fold``: 4 processes put durable random keys into a store holding
   ``--fold-prefill`` records for ``--fold-seconds``; the parent samples the
   log's size every 0.25 s; each worker reports its puts, its share of fold
   work (``records_folded``) and its peak RSS (VmHWM), also measured right
   after opening the store.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import queue
import random
import resource
import statistics
import sys
import time
from typing import Any

NS = ("bench",)
FOLD_KEYS: frozenset[str] = frozenset({"folds", "records_folded"})


def make_value(i: int) -> dict[str, Any]:
    """The record tools/bench.py writes (kept in step with bench.make_value)."""
    return {"task": "login", "ok": True, "n": i, "text": "x" * 100}


def pct(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, max(0, math.ceil(q / 100 * len(sorted_vals)) - 1))]


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB.

    Linux: VmHWM of /proc/self/status, which starts afresh at exec. Not
    ru_maxrss: Linux keeps that across fork and exec, so a spawned child would
    report its parent's peak.
    """
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 1)


def log_bytes(store_path: str) -> int | None:
    """Bytes in the store's write-ahead log directory, or None for an engine without one."""
    wal = os.path.join(store_path, "wal")
    if not os.path.isdir(wal):
        return None
    total = 0
    with contextlib.suppress(FileNotFoundError):  # the fold may recycle a segment meanwhile
        for entry in os.scandir(wal):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_blocks * 512 if entry.is_file() else 0
    return total


def _drain(out: Any, n: int, procs: list[Any], timeout_s: float) -> list[dict[str, Any]]:
    """Collect ``n`` reports from ``out``; fail fast if the children died without one."""
    got: list[dict[str, Any]] = []
    limit = time.monotonic() + timeout_s
    dead_since: float | None = None
    while len(got) < n:
        try:
            got.append(out.get(timeout=0.5))
            continue
        except queue.Empty:
            pass
        if time.monotonic() > limit:
            raise RuntimeError(f"timed out waiting for {n - len(got)} worker report(s)")
        if any(p.is_alive() for p in procs):
            dead_since = None
        elif dead_since is None:
            dead_since = time.monotonic()
        elif time.monotonic() - dead_since > 2:
            raise RuntimeError(f"workers died without reporting (exit codes {[p.exitcode for p in procs]})")
    errors = [r["error"] for r in got if "error" in r]
    if errors:
        raise RuntimeError("; ".join(sorted(set(errors)))[:300])
    return got


def _reap(procs: list[Any]) -> None:
    for p in procs:
        p.join(timeout=10)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


# ---------------------------------------------------------------------- 5. collector


def _collector_worker(path: str, wid: int, records: int, go: Any, out: Any, shard_kib: int = 0) -> None:
    try:
        import filemem

        opts: dict[str, Any] = {"shard_max_bytes": shard_kib << 10} if shard_kib else {}
        with filemem.Store(path, **opts) as store, store.collector(max_queue=max(records, 1000)) as c:
            ns = (*NS, f"c{wid}")
            values = [(f"k{i}", make_value(i)) for i in range(records)]
            out.put({"ready": wid, "module": filemem.__file__})
            go.wait()
            folded0 = store.stats().get("records_folded", 0)
            t0, cpu0 = time.monotonic(), time.process_time()
            for k, v in values:
                c.collect(ns, k, v)
            c.flush()
            t1, cpu1 = time.monotonic(), time.process_time()  # all this process's threads: collect, journal, apply
            folded = store.stats().get("records_folded", 0) - folded0  # by this process's fold, in the window
            out.put(
                {
                    "wid": wid,
                    "t0": t0,
                    "t1": t1,
                    "cpu_s": cpu1 - cpu0,
                    "applied": c.stats()["applied"],
                    "folded": folded,
                }
            )
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _lmdb_worker(path: str, wid: int, records: int, go: Any, out: Any) -> None:
    try:
        import json

        import lmdb

        try:
            import orjson

            dumps: Any = orjson.dumps
        except ImportError:  # pragma: no cover - orjson is a dependency of filemem's json codec

            def dumps(v: Any) -> bytes:
                return json.dumps(v).encode()

        env = lmdb.open(path, sync=False, map_size=1 << 31)
        values = [(f"c{wid}/k{i}".encode(), make_value(i)) for i in range(records)]
        out.put({"ready": wid})
        go.wait()
        t0, cpu0 = time.monotonic(), time.process_time()
        for k, v in values:
            # Encoded in the loop, as collect() encodes (and with the fastest
            # encoder there is: orjson, 0.1 us for this record), one
            # transaction per record, as a caller without a queue does.
            with env.begin(write=True) as txn:
                txn.put(k, dumps(v))
        t1, cpu1 = time.monotonic(), time.process_time()
        env.close()
        out.put({"wid": wid, "t0": t0, "t1": t1, "cpu_s": cpu1 - cpu0})
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _run_started(target: Any, path: str, nprocs: int, records: int, extra: tuple[Any, ...] = ()) -> dict[str, Any]:
    """Start ``nprocs`` workers, wait until each is ready, release them together; records/s to the last finish."""
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(path, w, records, go, out, *extra), daemon=True) for w in range(nprocs)]
    try:
        for p in procs:
            p.start()
        ready = _drain(out, nprocs, procs, 120)
        start = time.monotonic()
        go.set()
        done = _drain(out, nprocs, procs, 600)
    finally:
        _reap(procs)
    wall = max(r["t1"] for r in done) - start
    row: dict[str, Any] = {
        "records": nprocs * records,
        "wall_s": round(wall, 3),
        "rate": round(nprocs * records / wall, 1),
    }
    if all("folded" in r for r in done):
        row["folded"] = sum(r["folded"] for r in done)
    if all("cpu_s" in r for r in done):
        # CPU time of the workers' processes (every thread) per record: unlike the rate, time other
        # processes took the CPU does not inflate it.
        row["cpu_us_per_record"] = round(sum(r["cpu_s"] for r in done) / (nprocs * records) * 1e6, 2)
    modules = {r.get("module") for r in ready} - {None}
    if modules:
        row["module"] = sorted(modules)
    return row


def workload_collector(cfg: Any, dirs: Any, notes: list[str], have_lmdb: bool, expected: str | None) -> dict[str, Any]:
    import filemem

    shard_kib = getattr(cfg, "collector_shard_kib", 0) or 0
    res: dict[str, Any] = {"records_per_proc": cfg.collector_records, "shard_kib": shard_kib, "rows": {}}
    for n in (1, 4):
        path = dirs.new(f"collector-{n}")
        filemem.Store(path).close()
        try:
            row = _run_started(_collector_worker, path, n, cfg.collector_records, (shard_kib,))
        finally:
            dirs.drop(path)
        if expected and row.get("module") and row["module"] != [expected]:
            raise RuntimeError(f"collector workers imported {row['module']}, not the snapshot {expected}")
        res["rows"].setdefault("filemem collector fsync", {})[str(n)] = row
        print(f"  collector {n}p: {row['rate']:,.0f} records/s", file=sys.stderr, flush=True)
        if have_lmdb:
            lpath = dirs.new(f"collector-lmdb-{n}")
            os.makedirs(lpath)
            try:
                lrow = _run_started(_lmdb_worker, lpath, n, cfg.collector_records)
            finally:
                dirs.drop(lpath)
            res["rows"].setdefault("lmdb sync=False, txn per record", {})[str(n)] = lrow
            print(f"  collector lmdb {n}p: {lrow['rate']:,.0f} records/s", file=sys.stderr, flush=True)
    return res


# ---------------------------------------------------------------------- 6. visibility


def _vis_reader(path: str, n: int, ready: Any, out: Any) -> None:
    """Spin on cached gets of one key; note when each new value is first seen."""
    try:
        import filemem

        seen = [0] * n
        gets = 0
        with filemem.Store(path) as store:
            get = store.get
            clock = time.monotonic_ns
            get(NS, "vis")
            ready.set()
            last = -1
            deadline = time.monotonic() + 60 + n * 0.05
            while last < n - 1:
                v = get(NS, "vis")
                gets += 1
                if v is not None and v["n"] != last:
                    now = clock()
                    for i in range(last + 1, v["n"] + 1):  # a skipped value is seen when a later one is
                        seen[i] = now
                    last = v["n"]
                if gets & 0xFFF == 0 and time.monotonic() > deadline:
                    break
        out.put({"seen": seen, "gets": gets, "last": last})
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _vis_writer(path: str, n: int, gap_s: float, ready: Any, out: Any) -> None:
    try:
        import filemem

        rng = random.Random(7)
        returned = [0] * n
        with filemem.Store(path) as store:
            ready.wait(60)
            time.sleep(0.2)
            clock = time.monotonic_ns
            for i in range(n):
                store.put(NS, "vis", {"n": i, "text": "x" * 100})
                returned[i] = clock()
                time.sleep(gap_s * (0.5 + rng.random()))  # irregular, so no phase lock with anything periodic
        out.put({"returned": returned})
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def workload_visibility(cfg: Any, dirs: Any, notes: list[str]) -> dict[str, Any]:
    import filemem

    n = cfg.vis_samples
    path = dirs.new("visibility")
    with filemem.Store(path) as s:
        s.put(NS, "vis", {"n": -1})
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    rq, wq = ctx.Queue(), ctx.Queue()
    reader = ctx.Process(target=_vis_reader, args=(path, n, ready, rq), daemon=True)
    writer = ctx.Process(target=_vis_writer, args=(path, n, 0.01, ready, wq), daemon=True)
    try:
        reader.start()
        writer.start()
        w = _drain(wq, 1, [writer], 120 + n * 0.1)[0]
        r = _drain(rq, 1, [reader], 120)[0]
    finally:
        _reap([reader, writer])
        dirs.drop(path)
    lags = sorted((s - t) / 1e6 for s, t in zip(r["seen"], w["returned"], strict=True) if s and t)  # ms; 0 = never seen
    missed = sum(1 for s in r["seen"] if not s)
    row = {
        "samples": len(lags),
        "never_seen": missed,
        "p50_ms": round(pct(lags, 50), 3),
        "p90_ms": round(pct(lags, 90), 3),
        "p99_ms": round(pct(lags, 99), 3),
        "max_ms": round(lags[-1], 3) if lags else None,
        "negative": sum(1 for x in lags if x < 0),
        "reader_gets": r["gets"],
    }
    print(f"  visibility: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms", file=sys.stderr, flush=True)
    return row


# ---------------------------------------------------------------------- 7. fold under load


def _fold_worker(path: str, wid: int, prefill: int, seconds: float, go: Any, out: Any) -> None:
    try:
        import filemem

        rng = random.Random(wid)
        with filemem.Store(path) as store:
            store.get(NS, "k0")
            open_rss = peak_rss_mb()
            out.put({"ready": wid})
            go.wait()
            t0 = time.monotonic()
            end = t0 + seconds
            puts = 0
            while time.monotonic() < end:
                store.put(NS, f"k{rng.randrange(prefill * 2)}", make_value(puts))
                puts += 1
            t1 = time.monotonic()
            stats = store.stats()
        closed = time.monotonic()
        # After close: the last writer to close folds what is left, and that work counts too
        # (the engine's counters outlive the handle; stats() refuses a closed store).
        engine = getattr(getattr(store, "_backend", None), "engine", None)
        counters = getattr(engine, "counters", None) or {}
        out.put(
            {
                "wid": wid,
                "puts": puts,
                "t0": t0,
                "t1": t1,
                "closed": closed,
                "fold_total": {k: counters[k] for k in FOLD_KEYS if k in counters},
                "open_rss_mb": open_rss,
                "peak_rss_mb": peak_rss_mb(),
                "fold": {k: stats[k] for k in FOLD_KEYS if k in stats},
                "log_stats": {k: v for k, v in stats.items() if "log" in k and isinstance(v, (int, float))},
            }
        )
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def workload_fold(cfg: Any, dirs: Any, notes: list[str]) -> dict[str, Any]:
    import filemem

    path = dirs.new("fold")
    with filemem.Store(path, durability="flush") as s, s.batch() as b:
        for i in range(cfg.fold_prefill):
            b.put(NS, f"k{i}", make_value(i))
    nprocs = 4
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_fold_worker, args=(path, w, cfg.fold_prefill, cfg.fold_seconds, go, out), daemon=True)
        for w in range(nprocs)
    ]
    samples: list[tuple[float, int]] = []
    try:
        for p in procs:
            p.start()
        _drain(out, nprocs, procs, 120)
        start = time.monotonic()
        go.set()
        while time.monotonic() - start < cfg.fold_seconds:
            size = log_bytes(path)
            if size is not None:
                samples.append((round(time.monotonic() - start, 2), size))
            time.sleep(0.25)
        done = _drain(out, nprocs, procs, 120 + cfg.fold_seconds)
        at_rest = log_bytes(path)
    finally:
        _reap(procs)
        dirs.drop(path)
    wall = max(r["t1"] for r in done) - min(r["t0"] for r in done)
    has_log = bool(samples) or any(r["fold"].keys() >= FOLD_KEYS for r in done)
    res: dict[str, Any] = {
        "procs": nprocs,
        "seconds": cfg.fold_seconds,
        "prefill": cfg.fold_prefill,
        "puts": sum(r["puts"] for r in done),
        "puts_per_s": round(sum(r["puts"] for r in done) / wall, 1),
        "peak_rss_mb": [r["peak_rss_mb"] for r in done],
        "open_rss_mb": [r["open_rss_mb"] for r in done],
        "has_log": has_log,
    }
    if has_log:
        folded = sum(r["fold"].get("records_folded", 0) for r in done)
        res["records_folded"] = folded
        res["folds"] = sum(r["fold"].get("folds", 0) for r in done)
        res["fold_records_per_s"] = round(folded / wall, 1)
        # With the close: the store ends at rest, every record folded; the
        # rate over load + close is what the fold sustains (a short run folds
        # mostly at close, which the counters read before close miss).
        total = sum(r.get("fold_total", {}).get("records_folded", 0) for r in done)
        res["records_folded_with_close"] = total
        res["close_s"] = round(max(r.get("closed", r["t1"]) for r in done) - max(r["t1"] for r in done), 2)
        res["fold_records_per_s_with_close"] = round(
            total / (max(r.get("closed", r["t1"]) for r in done) - min(r["t0"] for r in done)), 1
        )
        res["log_stats"] = [r["log_stats"] for r in done]
        sizes = [s for _, s in samples]
        half = len(sizes) // 2
        res["log_bytes"] = {
            "max": max(sizes, default=0),
            "max_first_half": max(sizes[:half], default=0),
            "max_second_half": max(sizes[half:], default=0),
            "median": int(statistics.median(sizes)) if sizes else 0,
            "at_rest": at_rest,
            "samples": samples,
        }
    print(
        f"  fold: {res['puts_per_s']:,.0f} puts/s, peak RSS {res['peak_rss_mb']} MB, "
        + (f"{res['fold_records_per_s']:,.0f} records folded/s" if has_log else "n/a (no log)"),
        file=sys.stderr,
        flush=True,
    )
    return res


# ---------------------------------------------------------------------- report


def _get(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    got = results.get(name)
    return got if got and "error" not in got else None


def render(results: dict[str, Any], table: Any) -> list[str]:
    """The report sections of workloads 5-7 (``table`` is bench.table)."""
    parts: list[str] = []
    col = _get(results, "collector")
    if col:
        ref = col["rows"].get("filemem collector fsync", {})
        rows = []
        for label, cells in col["rows"].items():
            row = [label]
            for n in ("1", "4"):
                c = cells.get(n)
                if not c:
                    row.append("")
                    continue
                cell = f"{c['rate']:,.0f}/s"
                if not label.startswith("filemem") and ref.get(n):
                    cell += f" ({ref[n]['rate'] / c['rate']:.2f}x)"
                row.append(cell)
            rows.append(row)
        parts += [
            "",
            f"5. Collector sustained durable throughput: {col['records_per_proc']:,} records per process, collect() "
            "then flush(), store durability=fsync"
            + (f", shard_max_bytes {col['shard_kib']} KiB" if col.get("shard_kib") else "")
            + "; lmdb sync=False with one write txn per record",
            table(["store", "1 proc", "4 proc"], rows),
        ]
        folded = {n: c.get("folded") for n, c in ref.items() if c.get("folded") is not None}
        if folded:
            # Every record collected must be folded in the end; a window that ends before the first fold
            # step measures how fast the log absorbs records, not what the store sustains (the fold's
            # rate bounds that once the log reaches its back-pressure bound).
            parts.append(
                "   records folded by the collecting processes within the window: "
                + ", ".join(f"{n}p {v:,} of {int(ref[n]['records']):,}" for n, v in folded.items())
            )
    vis = _get(results, "visibility")
    if vis:
        parts += [
            "",
            f"6. Cross-process visibility: put returned -> first seen by a reader spinning on cached gets "
            f"({vis['samples']} puts, {vis['reader_gets']:,} reader gets)",
            table(
                ["p50 ms", "p90 ms", "p99 ms", "max ms", "seen before put returned", "never seen"],
                [
                    [
                        f"{vis['p50_ms']:.3f}",
                        f"{vis['p90_ms']:.3f}",
                        f"{vis['p99_ms']:.3f}",
                        f"{vis['max_ms']:.3f}",
                        str(vis["negative"]),
                        str(vis["never_seen"]),
                    ]
                ],
            ),
        ]
    fold = _get(results, "fold")
    if fold:
        if fold["has_log"]:
            lb = fold["log_bytes"]
            with_close = (
                f"; with the close fold {fold['fold_records_per_s_with_close']:,.0f} records/s "
                f"({fold['records_folded_with_close']:,} records, close {fold['close_s']} s)"
                if "records_folded_with_close" in fold
                else ""
            )
            log_line = (
                f"fold {fold['fold_records_per_s']:,.0f} records/s ({fold['records_folded']:,} records in "
                f"{fold['folds']} folds){with_close}; log size max {lb['max'] / 1e6:.1f} MB (first half {lb['max_first_half'] / 1e6:.1f}, "
                f"second half {lb['max_second_half'] / 1e6:.1f}), median {lb['median'] / 1e6:.1f} MB, at rest "
                f"{(lb['at_rest'] or 0) / 1e6:.1f} MB"
            )
        else:
            log_line = "fold throughput: n/a (no log); log size: n/a (no log)"
        parts += [
            "",
            f"7. Sustained load: {fold['procs']} processes x {fold['seconds']} s of durable puts of random keys "
            f"into a store holding {fold['prefill']:,} records",
            f"   puts: {fold['puts_per_s']:,.0f}/s in all",
            f"   {log_line}",
            f"   peak RSS per process: {', '.join(f'{x:.1f}' for x in fold['peak_rss_mb'])} MB "
            f"(after opening the store: {', '.join(f'{x:.1f}' for x in fold['open_rss_mb'])} MB)",
        ]
    return parts


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13's targets for workloads 5-7."""
    out: list[dict[str, Any]] = []
    col = _get(results, "collector")
    if col and "lmdb sync=False, txn per record" in col["rows"]:
        fm, lm = col["rows"]["filemem collector fsync"], col["rows"]["lmdb sync=False, txn per record"]
        xs = {n: fm[n]["rate"] / lm[n]["rate"] for n in ("1", "4") if n in fm and n in lm}
        out.append(
            {
                "target": "collector sustained durable throughput from 1 and 4 processes ahead of lmdb sync=False, "
                "txn per record",
                "met": bool(xs) and all(x > 1 for x in xs.values()),
                "detail": ", ".join(
                    f"{n}p {fm[n]['rate']:,.0f} vs {lm[n]['rate']:,.0f}/s = {x:.2f}x"
                    + (f" ({fm[n]['folded']:,} folded in the window)" if "folded" in fm[n] else "")
                    for n, x in xs.items()
                ),
            }
        )
    vis = _get(results, "visibility")
    if vis:
        out.append(
            {
                "target": "cross-process visibility to a reader busy in a tight loop: p99 < 5 ms and p50 < 0.5 ms",
                "met": vis["p99_ms"] < 5 and vis["p50_ms"] < 0.5 and vis["never_seen"] == 0,
                "detail": f"p50 {vis['p50_ms']} ms, p99 {vis['p99_ms']} ms, never seen {vis['never_seen']}",
            }
        )
    fold = _get(results, "fold")
    if fold:
        peak = max(fold["peak_rss_mb"])
        out.append(
            {
                "target": "peak RSS per process under sustained 4-writer load < 50 MB",
                "met": peak < 50,
                "detail": f"max {peak:.1f} MB",
            }
        )
        if fold["has_log"]:
            lb = fold["log_bytes"]
            out.append(
                {
                    "target": "the log does not grow without bound under sustained load",
                    "met": lb["max_second_half"] <= 2 * max(lb["max_first_half"], 1),
                    "detail": f"max {lb['max_first_half'] / 1e6:.1f} MB in the first half, "
                    f"{lb['max_second_half'] / 1e6:.1f} MB in the second",
                }
            )
        else:
            out.append(
                {
                    "target": "fold throughput and log size reported; the log does not grow without bound",
                    "met": False,
                    "detail": "n/a (no log): this engine has no write-ahead log",
                }
            )
    return out
