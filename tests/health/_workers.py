"""Child processes for the health tests (spawn context: importable, top-level functions)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import filemem


def touch(path: str, text: str = "") -> None:
    """Create ``path`` atomically with ``text`` (a ready signal the parent polls for)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def wait_for(path: str, timeout: float = 30.0) -> str:
    """The text of ``path`` once it exists; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"child never wrote {path}")
        time.sleep(0.01)
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def slow_update_child(store_path: str, ready_path: str, hold_s: float) -> None:
    """Hold a shard's lock the way a real agent can: an update() function that takes ``hold_s`` seconds."""
    with filemem.Store(store_path) as store:

        def slow(value: Any) -> int:
            touch(ready_path, str(os.getpid()))
            time.sleep(hold_s)
            return int(value or 0) + 1

        # The namespace exists first: an update() of a new namespace checks fn(None)
        # before it takes the lock (docs/concurrency.md), which would sleep unlocked.
        store.put("busy", "counter", 0)
        store.update("busy", "counter", slow)


def agent_child(store_path: str, agent: int, rounds: int, result_path: str) -> None:
    """One agent: counters (exactness), short-lived records (expiry work), churn (splits and merges).

    Writes how many LockTimeouts it met (any is a failure: maintenance must never
    hold an agent up that long) and how long its slowest write took.
    """
    timeouts = 0
    slowest = 0.0
    with filemem.Store(store_path, shard_max_bytes=2048, lock_timeout_s=5.0, durability="flush") as store:
        for i in range(rounds):
            for ns, key, op in (
                (("counters",), f"c{i % 4}", "update"),
                (("events", f"a{agent}"), f"e{i}", "ttl"),
                (("churn",), f"k{agent}-{i % 40}", "put"),
                (("churn",), f"k{agent}-{(i + 20) % 40}", "delete"),
            ):
                t0 = time.monotonic()
                try:
                    if op == "update":
                        store.update(ns, key, lambda n: (n or 0) + 1)
                    elif op == "ttl":
                        store.put(ns, key, {"i": i, "pad": "x" * 40}, ttl=0.05)
                    elif op == "put":
                        store.put(ns, key, {"i": i, "pad": "y" * 60})
                    else:
                        store.delete(ns, key)
                except filemem.LockTimeout:
                    timeouts += 1
                    if op == "update":
                        raise  # the counter would be short: fail loudly
                slowest = max(slowest, time.monotonic() - t0)
    touch(result_path, json.dumps({"timeouts": timeouts, "slowest_s": slowest}))
