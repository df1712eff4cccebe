"""Measure sessions: start/close, status updates, listing, death detection, slot hand-over (see docs/sessions.md).

Usage::

    python tools/bench_sessions.py                 # a table, ~10 seconds
    python tools/bench_sessions.py --json
    python tools/bench_sessions.py --rounds 500 --live 100

Figures (medians and p99 over ``--rounds``, in microseconds unless named):

* ``start+close``: ``store.session(...)`` then ``close()``, no limit set.
* ``start+close (limit)``: the same with ``limit_sessions(1000)`` (waiting-room ticket and slot lock).
* ``set_status``: one status update (an atomic record rewrite).
* ``sessions() x N``: listing ``--live`` live sessions (held by this process) plus as many ended ones.
* ``dead seen``: a spawned child holds a session; from its SIGKILL being
  reaped (``waitpid`` returned) to ``session_info`` reporting it crashed.
* ``hand-over``: with ``max_sessions=1``, a spawned child waits for the slot;
  from this process's ``close()`` returning to the child's ``session()``
  returning, on ``CLOCK_MONOTONIC`` (one clock for both processes).

Temp stores go under ``--tmpdir`` (default: ``benchtmp`` next to the repository), never /tmp.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import filemem  # noqa: E402


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _summary(name: str, xs: list[float], unit: str = "us") -> dict[str, object]:
    return {"name": name, "n": len(xs), "p50": statistics.median(xs), "p99": _pct(xs, 0.99), "unit": unit}


def _holder(path: str, ready: str) -> None:
    with filemem.Store(path) as store, store.session("holder"):
        Path(ready).touch()
        time.sleep(60)


def _waiter(path: str, out: str) -> None:
    with filemem.Store(path) as store:
        Path(out + ".ready").touch()
        with store.session("waiter", timeout=60):
            t = time.monotonic_ns()
        Path(out).write_text(str(t))


def _wait(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.001)


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    base = tempfile.mkdtemp(dir=args.tmpdir)
    ctx = mp.get_context("spawn")
    with filemem.Store(os.path.join(base, "a"), durability=args.durability) as store:
        xs = []
        for _ in range(args.rounds):
            t = time.perf_counter_ns()
            store.session("b").close()
            xs.append((time.perf_counter_ns() - t) / 1e3)
        out.append(_summary("start+close", xs))
        store.limit_sessions(1000)
        xs = []
        for _ in range(args.rounds):
            t = time.perf_counter_ns()
            store.session("b").close()
            xs.append((time.perf_counter_ns() - t) / 1e3)
        out.append(_summary("start+close (limit)", xs))
        store.limit_sessions(None)
        with store.session("s") as s:
            xs = []
            for i in range(args.rounds):
                t = time.perf_counter_ns()
                s.set_status("running", progress=i / args.rounds)
                xs.append((time.perf_counter_ns() - t) / 1e3)
        out.append(_summary("set_status", xs))
    with filemem.Store(os.path.join(base, "b"), durability=args.durability) as store:
        for _ in range(args.live):
            store.session("ended").close()
        live = [store.session(f"live-{i}") for i in range(args.live)]
        xs = []
        for _ in range(max(10, args.rounds // 10)):
            t = time.perf_counter_ns()
            got = store.sessions(alive=None)
            xs.append((time.perf_counter_ns() - t) / 1e3)
            assert len(got) == 2 * args.live
        out.append(_summary(f"sessions() x {2 * args.live}", xs))
        for s in live:
            s.close()
    path = os.path.join(base, "c")
    with filemem.Store(path) as store:
        xs = []
        for i in range(args.kills):
            ready = os.path.join(base, f"ready-{i}")
            p = ctx.Process(target=_holder, args=(path, ready))
            p.start()
            _wait(ready)
            [info] = store.sessions()
            os.kill(p.pid or 0, signal.SIGKILL)
            p.join()
            t = time.perf_counter_ns()
            seen = store.session_info(info.id)
            xs.append((time.perf_counter_ns() - t) / 1e3)
            assert seen is not None and seen.state == "crashed"
        out.append(_summary("dead seen", xs))
        store.limit_sessions(1)
        xs = []
        for i in range(args.kills):
            done = os.path.join(base, f"handover-{i}")
            s = store.session("holder")
            p = ctx.Process(target=_waiter, args=(path, done))
            p.start()
            _wait(done + ".ready")
            while not [x for x in store.sessions() if x.state == "waiting"]:
                time.sleep(0.001)
            s.close()
            t = time.monotonic_ns()
            p.join()
            xs.append((int(Path(done).read_text()) - t) / 1e6)
        out.append(_summary("hand-over", xs, "ms"))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200, help="timed calls per figure (default 200)")
    ap.add_argument("--live", type=int, default=50, help="live (and as many ended) sessions to list (default 50)")
    ap.add_argument("--kills", type=int, default=5, help="child processes for the dead-seen and hand-over figures")
    ap.add_argument("--durability", default="fsync", choices=["flush", "fsync"])
    ap.add_argument("--tmpdir", default=str(ROOT.parent / "benchtmp"), help="where temp stores go")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    os.makedirs(args.tmpdir, exist_ok=True)
    rows = run(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'figure':<24}{'n':>6}{'p50':>12}{'p99':>12}  unit   (durability={args.durability})")
    for r in rows:
        print(f"{r['name']:<24}{r['n']:>6}{r['p50']:>12.1f}{r['p99']:>12.1f}  {r['unit']}")


if __name__ == "__main__":
    main()
