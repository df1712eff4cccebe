"""Helpers for tests that run real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

import filemem
import filemem.admin


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


def settle(store: filemem.Store) -> None:
    """Fold the store's write-ahead log into its shard files now (``filemem.admin.fold``).

    For tests that look at shard files directly: on a format-2 store writes
    reach the shard files at the next fold (docs/concurrency.md), not when the
    write returns. Nothing to do on a format-1 or read-only store.
    """
    if not store.readonly:
        filemem.admin.fold(store)


def needs_keyword_search(store: filemem.Store) -> None:
    """Skip the calling test when ``store``'s backend refuses ``search(query=...)`` (issue 16).

    The PostgreSQL backend has filter-only search until its keyword index
    lands (the pgsearch branch); the probe asks the store itself, so the
    test runs again, unchanged, the moment the backend has it. Never an
    xfail: any other failure still fails.
    """
    import pytest

    try:
        store.search(None, query="probe", limit=1)
    except filemem.UnsupportedFeatureError as exc:
        pytest.skip(f"needs search(query=...) on the {exc.backend} backend (issue 16, pgsearch branch): {exc}")


def apply_puts_via_apply(engine: Any, puts: list[Any], extra: Any = ()) -> list[Any]:
    """An ``Engine.apply_puts`` that hands its batch to ``engine.apply`` as ``Op`` s.

    For tests that stall or fail the engine by patching ``Engine.apply``
    (or an engine's ``apply``): patch ``Engine.apply_puts`` with this too and
    the collector's batches reach that ``apply`` as they did before it took
    the tuple entry point. ``tests/wal/test_apply_puts.py`` holds the two
    entry points to the same frames.
    """
    from filemem._engine._core import puts_as_ops

    return list(engine.apply([*puts_as_ops(engine.codec.name, puts), *extra]))
