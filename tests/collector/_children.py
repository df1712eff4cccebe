"""Child-process entry points for the collector's real-process tests (spawn context).

Children report through ack files (one JSON line per ``os.write``, see
tests/concurrency/_workers.py): a line is a promise the parent checks.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import filemem
from filemem._engine import Engine
from tests.concurrency._workers import ack, open_ack, touch
from tests.helpers import apply_puts_via_apply


def record_key(proc: int, n: int) -> str:
    return f"p{proc}-r{n}"


def collect_child(
    path: str, proc: int, count: int, ack_path: str, ready_path: str, opts: dict[str, Any], slow_after: int = 0
) -> None:
    """Collect ``count`` records into ``("proc", <proc>)``; ack how many are accepted as we go; flush at the end.

    Ack lines: ``["accepted", proc, n]`` (records 1..n are journal-fsynced:
    the journal writes in id order, so the accepted count is the highest
    accepted id) and ``["flushed", proc, count]`` after flush().
    ``slow_after``: from that record on, pause 1 ms per record (a victim the
    parent means to kill mid-stream: a fast collector could otherwise finish
    before a parent on a loaded machine polls its acks); and a victim that
    gets to the end anyway waits there to be killed instead of flushing (a
    parent at load 10+ once polled too late for all three victims, which had
    flushed and retired their journals).
    """
    fd = open_ack(ack_path)
    with filemem.Store(path) as store:
        c = store.collector(**opts)
        touch(ready_path)
        ns = ("proc", str(proc))
        last = 0
        for n in range(1, count + 1):
            op = c.collect(ns, record_key(proc, n), {"proc": proc, "n": n})
            assert op == n
            if slow_after and n >= slow_after:
                time.sleep(0.001)
            if n % 250 == 0:
                accepted = c.stats()["accepted"]
                if accepted > last:
                    ack(fd, "accepted", proc, accepted)
                    last = accepted
        if slow_after:
            ack(fd, "accepted", proc, c.stats()["accepted"])
            time.sleep(3600)  # killed here at the latest; never flushed, so its journal is left
        c.flush()
        ack(fd, "flushed", proc, count)
        c.close()
    os.close(fd)


def journal_only_child(path: str, count: int, ready_path: str) -> None:
    """Collect ``count`` records with a writer that never applies (its apply blocks), then wait to be killed.

    Leaves a journal of ``count`` accepted records and an empty store: what a
    collector that died before its first apply leaves behind.
    """
    stall = threading.Event()
    real_apply = Engine.apply

    def stalled_apply(self: Engine, ops: list[Any]) -> list[Any]:
        if any(op.namespace and op.namespace[0] == "journal-only" for op in ops):
            stall.wait()
        return real_apply(self, ops)

    Engine.apply = stalled_apply  # type: ignore[method-assign]
    Engine.apply_puts = apply_puts_via_apply  # type: ignore[method-assign]
    store = filemem.Store(path)
    c = store.collector(batch_size=count, max_queue=count)
    for n in range(1, count + 1):
        c.collect(("journal-only",), f"k{n}", {"n": n})
    while c.stats()["accepted"] < count:
        time.sleep(0.01)
    touch(ready_path)
    time.sleep(120)


def open_store_child(path: str) -> None:
    """Open the store (which replays dead journals) and close it."""
    filemem.Store(path).close()


def replay_one_chunk_child(path: str, committed: str) -> None:
    """Open the store (replaying dead journals); after the first chunk commits, touch ``committed`` and hang."""
    from filemem._collector import _replay

    real = _replay._replay_chunk

    def once(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        touch(committed)
        time.sleep(120)  # the parent SIGKILLs us here
        return out

    _replay._replay_chunk = once  # type: ignore[assignment]
    filemem.Store(path).close()


def failing_store_child(path: str, count: int, fail_for_s: float, result_path: str) -> None:
    """Collect while the engine raises StorageError for ``fail_for_s`` seconds; report the collector's stats."""
    from tests.concurrency._workers import write_result

    real_apply = Engine.apply
    until = time.monotonic() + fail_for_s

    def flaky_apply(self: Engine, ops: list[Any]) -> list[Any]:
        if time.monotonic() < until:
            raise filemem.StorageError("injected: disk unavailable", errno=5, path=self.root)
        return real_apply(self, ops)

    Engine.apply = flaky_apply  # type: ignore[method-assign]
    Engine.apply_puts = apply_puts_via_apply  # type: ignore[method-assign]
    with filemem.Store(path) as store:
        c = store.collector(batch_size=100, breaker_threshold=3, breaker_reset=0.2, backoff_base=0.01, backoff_max=0.05)
        states = set()
        for n in range(1, count + 1):
            c.collect("flaky", f"k{n}", n)
            if n % 50 == 0:
                states.add(c.stats()["breaker"])
                time.sleep(0.01)
        c.flush(timeout=60)
        stats = c.stats()
        c.close()
    write_result(result_path, {"stats": stats, "states": sorted(states)})
