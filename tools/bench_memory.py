"""Figures for the memory kinds: per-call latency, recall latency, exact counts under 8 processes.

    python tools/bench_memory.py --n 1000 --procs 8 --durability flush

Prints one line per measurement (median and 99th percentile in milliseconds).
The store lives under --dir (default: the system temp dir).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import filemem
from filemem.memory import Episodic, Semantic, Sites, Skills, Worklog, recall_context

WORDS = [
    "login",
    "search",
    "cart",
    "checkout",
    "deploy",
    "staging",
    "timeout",
    "captcha",
    "export",
    "report",
    "invoice",
    "page",
    "form",
    "table",
]


def timed(label: str, n: int, fn: Callable[[int], Any]) -> None:
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    p50, p99 = statistics.median(lat) * 1e3, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3
    print(f"{label:44} n={n:6}  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms")


def text(i: int) -> str:
    return " ".join(WORDS[(i * k + k) % len(WORDS)] for k in range(1, 7)) + f" item {i}"


def visitor(path: str, durability: str, m: int, barrier: Any) -> None:
    with filemem.Store(path, durability=durability) as store:  # type: ignore[arg-type]
        sites = Sites(store, ("bench", "sites"))
        barrier.wait(60)
        for i in range(m):
            sites.record_visit("https://shop.example/cart", 0.1, success=i % 3 != 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--visits", type=int, default=200, help="visits per process in the multi-process run")
    ap.add_argument("--durability", choices=["fsync", "flush"], default="flush")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    if args.dir is not None:
        os.makedirs(args.dir, exist_ok=True)
    root = tempfile.mkdtemp(dir=args.dir)
    path = os.path.join(root, "store")
    try:
        with filemem.Store(path, durability=args.durability) as store:
            eps, facts = Episodic(store, ("bench", "eps")), Semantic(store, ("bench", "facts"))
            skills, sites = Skills(store, ("bench", "skills")), Sites(store, ("bench", "sites"))
            with Worklog(store, ("bench", "log"), summarize_every=None) as log:
                timed("Episodic.record", args.n, lambda i: eps.record(text(i), ["a", "b"], "done", i % 4 != 0))
                timed("Semantic.learn (new facts)", args.n, lambda i: facts.learn(text(i), 0.5, source="bench"))
                timed("Semantic.learn (merge into 10 facts)", args.n, lambda i: facts.learn(text(i % 10), 0.1))
                timed(
                    "Skills.record_use (10 skills)", args.n, lambda i: skills.record_use(f"skill {i % 10}", True, 0.2)
                )
                timed(
                    "Sites.record_visit (50 URLs, batch of 2)",
                    args.n,
                    lambda i: sites.record_visit(f"https://s{i % 5}.example/p{i % 10}", 0.3),
                )
                timed("Worklog.append", args.n, lambda i: log.append("s1", text(i)))
                timed("Episodic.recent(10)", 200, lambda i: eps.recent(10))
                timed(
                    f"Episodic.search (query, {args.n} episodes)", 200, lambda i: eps.search(WORDS[i % len(WORDS)], k=5)
                )
                timed(f"Semantic.recall ({args.n + 10} facts)", 200, lambda i: facts.recall(WORDS[i % len(WORDS)], k=5))
                timed("Skills.best_for", 200, lambda i: skills.best_for("skill", k=3))
                timed(f"Worklog summary ({args.n} entries, extractive)", 5, lambda i: log.summarize("s1").result())
                timed(
                    "recall_context (4 kinds, threads)",
                    100,
                    lambda i: recall_context(WORDS[i % len(WORDS)], [facts, eps, skills, log], budget_chars=2000),
                )
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(args.procs)
        procs = [
            ctx.Process(target=visitor, args=(path, args.durability, args.visits, barrier)) for _ in range(args.procs)
        ]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        secs = time.perf_counter() - t0
        with filemem.Store(path) as store:
            got = Sites(store, ("bench", "sites")).site("https://shop.example/cart")
            visits = got.visits if got else 0
        total = args.procs * args.visits
        print(
            f"{args.procs} processes x {args.visits} record_visit on one URL: {secs:.2f}s "
            f"({total / secs:.0f} visits/s incl. process start), counted {visits} of {total}: "
            + ("exact" if visits == total else "LOST UPDATES")
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
