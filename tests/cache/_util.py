"""Small helpers shared by the cache tests."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import filemem

#: Long enough that only a file-system event can explain a refresh inside a test.
LONG_TTL = 30.0


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005) -> Any:
    """Poll ``pred`` until it returns something truthy; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def spin_get(store: filemem.Store, ns: Any, key: str, expected: Any, timeout: float = 10.0) -> float:
    """Cached reads in a loop until ``expected`` comes back; the seconds it took."""
    start = time.monotonic()
    while store.get(ns, key) != expected:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{key!r} did not become {expected!r} within {timeout} s")
    return time.monotonic() - start


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Live threads that were not in ``before``, except a format-2 store's fold thread.

    That one starts with the first write and is joined at close; the leak
    check in tests/conftest.py still fails a test that leaves it running.
    One inotify watcher is one thread here: watchdog 7.1.1 gives its reader
    (``InotifyFD``) a dispatcher thread that the reader joins when it stops,
    so a dispatcher is not counted while a reader is alive (and is, should
    one ever outlive its reader).
    """
    new = [t for t in threading.enumerate() if t not in before and t.is_alive() and t.name != "filemem-fold"]
    if any(type(t).__name__ == "InotifyFD" for t in new):
        new = [t for t in new if t.name != "InotifyFD-Dispatcher"]
    return new


def open_fds() -> int:
    """How many file descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


def make_store(path: str, **options: Any) -> filemem.Store:
    """A store with a long TTL unless told otherwise."""
    options.setdefault("cache_ttl_s", LONG_TTL)
    return filemem.Store(path, **options)


def precreate(store: filemem.Store, *namespaces: Any) -> None:
    """Write a seed record in each namespace, so its directories exist before a watcher starts.

    Tests that are not about new directories use this: a directory created
    while the inotify watcher is adding watches can go unwatched (see
    test_visibility.py::test_directory_created_while_its_parent_is_being_watched_is_watched).
    """
    for ns in namespaces:
        store.put(ns, "_seed", 0)
