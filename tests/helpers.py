"""Helpers for tests that run real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import time


def reap(procs: list[mp.process.BaseProcess], timeout: float = 60.0) -> None:
    """Join children, killing any still alive after ``timeout``; never leaves one behind."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)


def file_mode(path: str) -> int:
    """Permission bits of ``path``."""
    return os.stat(path).st_mode & 0o777


def settle(store: object) -> None:
    """Fold the store's write-ahead log into its shard files now.

    For tests that look at shard files directly: writes reach the shard files
    at the next fold (docs/concurrency.md), not when the write returns.
    """
    store._engine.settle()  # type: ignore[attr-defined]
