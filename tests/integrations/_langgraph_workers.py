"""Child-process entry points for the multi-process FileMemStore tests (spawned: module level, picklable args).

Children report through files (see tests/concurrency/_workers.py): an ack line
is appended only after the store call returned, so it is a promise the parent
checks even if the child is SIGKILLed right after.
"""

from __future__ import annotations

import time
from typing import Any

from tests.concurrency._workers import ack, open_ack, write_result


def bump(value: dict[str, Any] | None) -> dict[str, Any]:
    return {"n": (value or {"n": 0})["n"] + 1}


def writer_child(path: str, idx: int, n_keys: int, n_incr: int, procs: int, barrier: Any, result: str) -> None:
    """Write n_keys own items and n_incr exact increments of one hot key, then wait to see everyone's writes."""
    from filemem.integrations.langgraph import FileMemStore

    with FileMemStore(path) as lg:
        barrier.wait(60)
        for i in range(max(n_keys, n_incr)):
            if i < n_keys:
                lg.put(("shared", f"p{idx}"), f"k/{i}", {"by": idx, "i": i})
            if i < n_incr:
                lg.update(("hot",), "counter", bump)
        barrier.wait(60)
        # Cached reads are refreshed by file-system events within milliseconds,
        # and are never older than the cache TTL (1 s): poll well past that.
        want = procs * n_keys
        deadline = time.monotonic() + 20
        seen = 0
        while time.monotonic() < deadline:
            seen = len(lg.search(("shared",), limit=10_000))
            if seen >= want:
                break
            time.sleep(0.05)
        spaces = lg.list_namespaces(prefix=("shared",))
        counter = lg.get(("hot",), "counter")
        write_result(
            result,
            {"seen": seen, "namespaces": len(spaces), "counter": None if counter is None else counter.value["n"]},
        )


def incr_child(path: str, acks: str, barrier: Any) -> None:
    """Increment the hot key until killed or done, acknowledging each returned update."""
    from filemem.integrations.langgraph import FileMemStore

    fd = open_ack(acks)
    with FileMemStore(path) as lg:
        barrier.wait(60)
        for _ in range(400):
            got = lg.update(("hot",), "counter", bump)
            ack(fd, got["n"])
