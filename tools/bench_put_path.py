"""Puts per second and CPU per put, from N processes on one store, with A/B of code trees in one run.

``tools/bench.py`` compares filemem with its peers; this tool looks at
filemem's own put path while it changes: each cell starts N spawned processes
that put into one fresh store for a fixed time, and reports puts/s (all
processes, first start to last finish) and CPU per put (user + system of the
workers, which a busy machine inflates far less than wall time). With
``--code NAME=DIR`` (repeatable) the cells alternate between code trees (a
checkout or a copy of the repository: ``DIR/filemem`` is imported), round by
round, so a shared machine's noise lands on every variant alike.

Example::

    python tools/bench_put_path.py --procs 1,4 --durability flush,fsync --seconds 3 --rounds 3 \\
        --code old=../old-checkout --code new=.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

_WORKER = r"""
import json, multiprocessing as mp, os, sys, tempfile, time

def worker(root, idx, seconds, durability, q):
    import filemem
    s = filemem.Store(root, durability=durability)
    n = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while time.perf_counter() - t0 < seconds:
        s.put(("bench", f"p{idx}"), f"k{n % 2000}", {"n": n, "text": "x" * 100})
        n += 1
    q.put((n, t0, time.perf_counter(), time.process_time() - c0))
    s.close()

if __name__ == "__main__":
    procs, durability, seconds, root = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    import filemem
    filemem.Store(root).close()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=worker, args=(root, i, seconds, durability, q)) for i in range(procs)]
    for p in ps:
        p.start()
    rs = [q.get(timeout=seconds * 20 + 60) for _ in ps]
    for p in ps:
        p.join()
    total = sum(r[0] for r in rs)
    wall = max(r[2] for r in rs) - min(r[1] for r in rs)
    print(json.dumps({"puts": total, "wall_s": wall, "cpu_s": sum(r[3] for r in rs), "file": filemem.__file__}))
"""


def _cell(code: str, procs: int, durability: str, seconds: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(code))
    with tempfile.TemporaryDirectory(prefix="filemem-putpath-") as tmp:
        # A file, not ``-c``: spawned children import the worker from the main module's file.
        script, root = os.path.join(tmp, "worker.py"), os.path.join(tmp, "store")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(_WORKER)
        out = subprocess.run(
            [sys.executable, script, str(procs), durability, str(seconds), root],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds * 20 + 120,
            check=True,
        )
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", default="1,4", help="comma-separated process counts (default 1,4)")
    ap.add_argument("--durability", default="flush,fsync", help="comma-separated durabilities (default flush,fsync)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds each cell puts for (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; variants alternate inside each (default 3)")
    ap.add_argument("--code", action="append", default=[], help="NAME=DIR of a code tree to compare (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the cells as JSON")
    a = ap.parse_args(argv)
    variants = [tuple(c.split("=", 1)) for c in a.code] or [("tree", os.path.dirname(os.path.dirname(__file__)) or ".")]
    procs = [int(p) for p in a.procs.split(",")]
    durs = a.durability.split(",")
    cells: list[dict[str, Any]] = []
    start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load0 = os.getloadavg()
    for r in range(a.rounds):
        for p in procs:
            for d in durs:
                for name, code in variants:
                    got = _cell(code, p, d, a.seconds)
                    cell = {"variant": name, "round": r, "procs": p, "durability": d, **got}
                    cell["puts_per_s"] = got["puts"] / got["wall_s"]
                    cell["cpu_us_per_put"] = got["cpu_s"] / max(got["puts"], 1) * 1e6
                    cells.append(cell)
                    if not a.json:
                        print(
                            f"round {r} {name:>8} {p}p {d:5}: {cell['puts_per_s']:>8,.0f} puts/s"
                            f"  cpu/put {cell['cpu_us_per_put']:>5.0f} us",
                            flush=True,
                        )
    load1 = os.getloadavg()
    if a.json:
        print(json.dumps({"date": start, "load": [load0, load1], "cells": cells}, indent=1))
        return 0
    print(f"\n{start}; load average at start {load0[0]:.1f}, at end {load1[0]:.1f}; medians of {a.rounds} rounds:")
    for p in procs:
        for d in durs:
            for name, _ in variants:
                mine = [c for c in cells if c["variant"] == name and c["procs"] == p and c["durability"] == d]
                rate = sorted(c["puts_per_s"] for c in mine)[len(mine) // 2]
                cpu = sorted(c["cpu_us_per_put"] for c in mine)[len(mine) // 2]
                print(f"  {name:>8} {p}p {d:5}: {rate:>8,.0f} puts/s  cpu/put {cpu:>5.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
