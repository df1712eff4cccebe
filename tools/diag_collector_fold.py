"""Where one collector process's time goes once the log must be folded (issue 13 diagnostic).

The collector figure of tools/bench.py (20,000 records per process) ends
before the first fold step; a longer run does not. Two measurements, each in
this process, on a new store in the system temp directory:

* ``collect``: ``collect()`` ``--records`` records into one namespace and
  ``flush()``; records/s to the flush, CPU microseconds per record (every
  thread), records the background fold moved meanwhile. ``--no-fold`` turns
  the fold off (the log alone: what the collector costs without its fold).
* ``fold``: collect them with the fold off, then time one fold of them all:
  records/s, CPU seconds, shard rewrites. ``--profile`` prints cProfile's top
  functions of the fold.

Usage::

    python tools/diag_collector_fold.py collect --records 100000
    python tools/diag_collector_fold.py fold --records 30000 --code <tree>   # A/B against another checkout
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

NS = ("bench", "c0")


def _value(i: int) -> dict[str, Any]:
    return {"task": "login", "ok": True, "n": i, "text": "x" * 100}  # tools/bench.py's record


def _hwm_mb() -> float:
    """Peak RSS of this process (VmHWM, Linux), MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("collect", "fold"))
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--code", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--no-fold", action="store_true", help="collect: leave the whole log unfolded")
    ap.add_argument(
        "--step-kib", type=int, default=0, help="log moved per fold checkpoint step (KiB; default: the engine's)"
    )
    ap.add_argument("--profile", action="store_true", help="fold: cProfile's top 30 functions")
    ap.add_argument(
        "--shard-kib", type=int, default=0, help="the store's shard_max_bytes in KiB (default: the store's)"
    )
    ap.add_argument(
        "--durability", choices=("fsync", "flush"), default="fsync", help="the store's durability (default fsync)"
    )
    a = ap.parse_args()
    code = os.path.abspath(a.code)
    sys.path.insert(0, code)
    import filemem
    from filemem._engine import _log as engine_log

    assert filemem.__file__.startswith(code), filemem.__file__
    if a.no_fold or a.mode == "fold":
        engine_log.FOLD_BYTES = engine_log.BACKLOG_BYTES = 1 << 40
        engine_log.FOLD_IDLE_S = 3600.0
    if a.step_kib:
        engine_log.FOLD_CHECKPOINT_BYTES = a.step_kib << 10
    path = tempfile.mkdtemp(prefix="filemem-diag-collector-fold-")
    kwargs: dict[str, Any] = {"durability": a.durability}
    if a.shard_kib:
        kwargs["shard_max_bytes"] = a.shard_kib << 10
    store = filemem.Store(path, **kwargs)
    try:
        engine: Any = store._backend.engine  # type: ignore[attr-defined]
        collector = store.collector(max_queue=a.records + 1000)
        values = [(f"k{i}", _value(i)) for i in range(a.records)]
        t0, cpu0 = time.monotonic(), time.process_time()
        for k, v in values:
            collector.collect(NS, k, v)
        collector.flush()
        t1, cpu1 = time.monotonic(), time.process_time()
        if a.mode == "collect":
            print(
                f"collect {a.records:,} records{' (fold off)' if a.no_fold else ''}: "
                f"{a.records / (t1 - t0):,.0f} records/s, {(cpu1 - cpu0) / a.records * 1e6:.2f} us CPU per record, "
                f"{engine.counters['records_folded']:,} folded meanwhile, peak RSS {_hwm_mb():.1f} MB"
            )
            return
        writes = engine.counters["shard_writes"]
        before = _hwm_mb()
        prof = None
        if a.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0, cpu0 = time.monotonic(), time.process_time()
        engine.fold(wait=True)
        t1, cpu1 = time.monotonic(), time.process_time()
        if prof is not None:
            import pstats

            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        print(
            f"fold {engine.counters['records_folded']:,} records: {a.records / (t1 - t0):,.0f} records/s, "
            f"{cpu1 - cpu0:.2f} s CPU, {engine.counters['shard_writes'] - writes:,} shard writes, "
            f"peak RSS {before:.1f} MB before the fold, {_hwm_mb():.1f} MB after"
        )
    finally:
        shutil.rmtree(path, ignore_errors=True)
        sys.stdout.flush()
        os._exit(0)  # the collector's close would fold everything again: not what is measured


if __name__ == "__main__":
    main()
