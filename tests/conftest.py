"""Shared fixtures: a fresh store per test, and leak checks.

Every test fails if it leaves a thread running or a child process alive:
multi-process tests must clean up whatever happens (use ``spawn_ctx`` and
``reap``).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import filemem
from filemem import _engine


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    threads_before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        extra = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        children = mp.active_children()
        if not extra and not children:
            return
        if time.monotonic() > deadline:
            for c in children:
                c.kill()
                c.join(5)
            pytest.fail(f"test leaked threads {extra} or child processes {children}")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _store_format(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``@pytest.mark.store_format(1)``: stores the test creates (here and in its children) have that format.

    For tests about one format's internals (format 1's shard files written by
    each put, say); every other test runs on the default format, and CI runs
    a subset again with ``FILEMEM_STORE_FORMAT=1``.
    """
    marker = request.node.get_closest_marker("store_format")
    if marker is not None:
        version = int(marker.args[0])
        monkeypatch.setattr(_engine._marker, "NEW_STORE_FORMAT", version)
        monkeypatch.setenv("FILEMEM_STORE_FORMAT", str(version))  # spawned children read it at import


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    """A path for a new store (not yet created)."""
    return str(tmp_path / "store")


@pytest.fixture(params=["json", "msgpack"])
def codec(request: pytest.FixtureRequest) -> str:
    """Both shipped codecs."""
    return str(request.param)


@pytest.fixture
def store(store_path: str, codec: str) -> Iterator[filemem.Store]:
    """A fresh store in each codec, closed after the test."""
    s = filemem.Store(store_path, codec=codec)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def spawn_ctx() -> mp.context.SpawnContext:
    """The spawn context: children start clean (no inherited locks or threads)."""
    return mp.get_context("spawn")
