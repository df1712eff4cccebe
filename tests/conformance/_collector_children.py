"""Child-process entry points for the collector tests that run on both backends (spawn context)."""

from __future__ import annotations

import threading
import time
from typing import Any

import filemem
from tests.concurrency._workers import touch
from tests.helpers import apply_puts_via_apply


def journal_only_child(location: str, count: int, ready_path: str) -> None:
    """Collect ``count`` records whose apply never happens (it blocks), then wait to be killed.

    Leaves a journal of ``count`` accepted records and nothing in the store,
    on either backend: the collector's engine (the file engine, or the
    server's journal engine) gets an ``apply`` that blocks.
    """
    stall = threading.Event()
    store = filemem.Store(location)
    engine = store._backend.collector_engine
    real_apply = engine.apply

    def stalled_apply(ops: list[Any]) -> list[Any]:
        if any(op.namespace and op.namespace[0] == "journal-only" for op in ops):
            stall.wait()
        return real_apply(ops)

    engine.apply = stalled_apply
    if hasattr(engine, "apply_puts"):
        # The file engine takes the collector's batches through the tuple
        # entry point: route them to the stalled apply.
        engine.apply_puts = lambda puts, extra=(): apply_puts_via_apply(engine, puts, extra)
    c = store.collector(batch_size=count, max_queue=count)
    for n in range(1, count + 1):
        c.collect(("journal-only",), f"k{n}", {"n": n})
    while c.stats()["accepted"] < count:
        time.sleep(0.01)
    touch(ready_path)
    time.sleep(120)  # the parent SIGKILLs us here
