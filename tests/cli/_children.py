"""Child processes for the live-store CLI tests (spawn context: module-level functions, picklable arguments)."""

from __future__ import annotations

import json
import os
from typing import Any

from filemem import Store

COUNTER_NS = [("live", "n0"), ("live", "n1"), ("live", "n2")]
CHURN_NS = ("live", "churn")


def incr(v: Any) -> int:
    return (v or 0) + 1


def writer_child(path: str, wid: int, stop_path: str, ready_path: str, result_path: str, min_rounds: int) -> None:
    """Update counters and churn records until ``stop_path`` appears (and at least ``min_rounds`` times).

    Writes its per-counter increments to ``result_path`` at the end: the parent
    checks that no update was lost whatever the CLI did meanwhile.
    """
    counts: dict[str, int] = {}
    with Store(path, shard_max_bytes=2048, durability="flush") as store:
        i = 0
        while i < min_rounds or not os.path.exists(stop_path):
            if i == 1:  # ready once the first round is on disk: the parent's commands then see data
                with open(ready_path, "w"):
                    pass
            ns = COUNTER_NS[i % len(COUNTER_NS)]
            key = f"c{i % 5}"
            store.update(ns, key, incr)
            name = "/".join(ns) + "|" + key
            counts[name] = counts.get(name, 0) + 1
            store.put(CHURN_NS, f"w{wid}-{i % 40}", {"i": i, "pad": "x" * 80})
            if i % 3 == 0:
                store.delete(CHURN_NS, f"w{wid}-{(i + 20) % 40}")
            i += 1
    tmp = result_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"counts": counts, "rounds": i}, fh)
    os.replace(tmp, result_path)


def holder_child(path: str, ns: str, key: str, ready_path: str, stop_path: str) -> None:
    """Hold a snapshot (shared locks) on the shard of ``key`` until ``stop_path`` appears."""
    import time

    with Store(path) as store, store.snapshot() as snap:
        snap.get(ns, key)
        with open(ready_path, "w"):
            pass
        deadline = time.monotonic() + 60
        while not os.path.exists(stop_path) and time.monotonic() < deadline:
            time.sleep(0.01)


def append_lock_holder_child(path: str, ready_path: str, stop_path: str) -> None:
    """A format-2 writer stuck mid-commit: the store open, its log's append lock held until ``stop_path`` appears."""
    import fcntl
    import time

    with Store(path) as store:
        assert store._engine.log is not None
        fd = os.open(os.path.join(path, "wal", "append.lock"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with open(ready_path, "w"):
                pass
            deadline = time.monotonic() + 60
            while not os.path.exists(stop_path) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            os.close(fd)


def merge_writer_child(path: str, wid: int, rounds: int, ready_path: str, result_path: str) -> None:
    """Update shared counters and delete this writer's prefilled keys while the parent compacts and merges."""
    counts: dict[str, int] = {}
    with Store(path, shard_max_bytes=16384, durability="flush") as store:
        with open(ready_path, "w"):
            pass
        for i in range(rounds):
            key = f"c{i % 10}"
            store.update("m", key, incr)
            counts[key] = counts.get(key, 0) + 1
            store.delete("m", f"p{wid}-{i:03d}")
    tmp = result_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(counts, fh)
    os.replace(tmp, result_path)
