"""The main job: several agent processes sharing one store (layer L5).

``filemem demo`` starts a planner and N workers as real processes. Each worker
records episodes in its own namespace, learns facts in a shared one, and bumps
shared counters with ``update`` (the read-modify-write that loses updates in a
plain JSON file). The parent then prints what they wrote and checks that no
update was lost and that the store is clean.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._store import Store

__all__ = ["DemoReport", "run_demo"]

DEFAULT_DIR = "filemem-demo"


def _merge_fact(fact: str, worker: int) -> Callable[[Any], dict[str, Any]]:
    def merge(current: Any) -> dict[str, Any]:
        current = current or {}
        return {
            "text": f"lesson {fact}",
            "evidence": current.get("evidence", 0) + 1,
            "learned_by": sorted({*current.get("learned_by", []), worker}),
        }

    return merge


def _worker(path: str, run: str, worker: int, rounds: int, durability: str) -> None:
    store = Store(path, durability=durability)  # type: ignore[arg-type]
    try:
        mine = ("demo", run, f"worker-{worker}", "episodic")
        shared = ("demo", run, "shared")
        for i in range(rounds):
            store.put(mine, f"ep-{i:04d}", {"task": f"task-{i}", "ok": i % 7 != 0, "worker": worker})
            store.update(shared, "episodes", lambda n: (n or 0) + 1)
            store.update(shared, f"by-worker-{worker}", lambda n: (n or 0) + 1)
            if i % 10 == 0:
                fact = f"fact-{i // 10}"
                # Many workers learn the same fact; merge instead of overwrite.
                store.update((*shared, "facts"), fact, _merge_fact(fact, worker))
            if i % 25 == 24:
                with store.batch() as b:
                    b.put(mine, "progress", {"done": i + 1, "of": rounds})
                    b.update(shared, "batches", lambda n: (n or 0) + 1)
    finally:
        store.close()


@dataclass
class DemoReport:
    """What a demo run found (also printed by ``filemem demo``)."""

    path: str
    run: str
    workers: int
    rounds: int
    seconds: float
    expected_episodes: int
    counted_episodes: int
    stored_episodes: int
    facts: int
    namespaces: int
    shards: int
    problems: list[str]

    @property
    def lost_updates(self) -> int:
        """Increments that did not survive (must be 0)."""
        return self.expected_episodes - self.counted_episodes

    @property
    def ok(self) -> bool:
        """True when nothing was lost and the store checks clean."""
        return self.lost_updates == 0 and self.stored_episodes == self.expected_episodes and not self.problems


def run_demo(
    path: str | None = None,
    *,
    workers: int = 4,
    rounds: int = 100,
    durability: str = "fsync",
    echo: Callable[[str], Any] = print,
) -> DemoReport:
    """Run the demo and return its report.

    >>> report = run_demo("/tmp/demo-store", workers=2, rounds=20, echo=lambda s: None)  # doctest: +SKIP
    >>> report.lost_updates
    0
    """
    path = os.path.abspath(path or os.environ.get("FILEMEM_DEMO_DIR", DEFAULT_DIR))
    run = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    Store(path).close()  # create it once, before the workers race to
    echo(f"filemem demo: {workers} agent processes x {rounds} rounds sharing {path} (run {run})")
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    procs = [ctx.Process(target=_worker, args=(path, run, w, rounds, durability)) for w in range(workers)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    seconds = time.perf_counter() - started
    problems = [f"worker {i} exited with code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode != 0]
    with Store(path) as store:
        shared = ("demo", run, "shared")
        counted = store.get(shared, "episodes", 0)
        stored = sum(
            1
            for w in range(workers)
            for key in store.keys(("demo", run, f"worker-{w}", "episodic"))
            if key.startswith("ep-")
        )
        facts = store.items((*shared, "facts"))
        for w in range(workers):
            got = store.get(shared, f"by-worker-{w}", 0)
            if got != rounds:
                problems.append(f"worker {w}: counter says {got}, expected {rounds}")
        namespaces = store.list_namespaces(("demo", run))
        shards = sum(1 for ns in namespaces for name in os.listdir(store._engine.ns_dir(ns)) if name.endswith(".shard"))
        findings = store.check()
        problems.extend(f"check: {f.code} {f.path}" for f in findings)
        sample = store.items(("demo", run, "worker-0", "episodic"))[:3]
    report = DemoReport(
        path,
        run,
        workers,
        rounds,
        seconds,
        workers * rounds,
        counted,
        stored,
        len(facts),
        len(namespaces),
        shards,
        problems,
    )
    echo("")
    echo("a few episodes worker-0 recorded:")
    for item in sample:
        echo(f"  {'/'.join(item.namespace)}/{item.key} v{item.version}: {item.value}")
    if facts:
        f = facts[0]
        echo(
            f"a fact all workers learned: {f.key} -> evidence {f.value['evidence']}, learned by {f.value['learned_by']}"
        )
    echo("")
    echo(f"namespaces           {report.namespaces}")
    echo(f"shard files          {report.shards}")
    echo(f"episodes stored      {report.stored_episodes} (expected {report.expected_episodes})")
    echo(f"shared counter       {report.counted_episodes} (expected {report.expected_episodes})")
    echo(f"lost updates         {report.lost_updates}")
    echo(f"facts (merged)       {report.facts}")
    echo(f"time                 {report.seconds:.2f}s")
    echo(f"store check          {'clean' if not findings else f'{len(findings)} finding(s)'}")
    echo(
        "result               "
        + ("OK: nothing lost, nothing torn" if report.ok else "PROBLEMS: " + "; ".join(problems))
    )
    return report
