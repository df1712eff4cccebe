"""The cached get of a hot key (issue 13: cached gets from many processes ahead of lmdb).

A key read before, whose shard is fresh and with nothing committed since,
is answered by the file backend alone: no system call, and no Python call
below ``FileBackend.get`` (the commit counter is one C-level read of the
mapped control page, the value's copy a C-level ``dict.copy``). The old path
called five engine/log functions per get (``changed``, ``commits``,
``log_generation``, ``copy_value`` ...), about 1.5 us of the 2.9 us a get
cost. The tests also pin what the shortcut must keep: a copy, never the
cached object, and a stale entry never served.

With the portable fallbacks (``FILEMEM_PORTABLE_IO=1``, or a platform
without ``mmap``) the control page is not mapped: the counter is read from
the file, so a hot get costs that one read (and the Python calls that make
it) and nothing else. The tests pin that cost exactly on that path.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

import filemem
from filemem._wal import _platform

NS = ("hot", "path")

#: What reading the commit counter costs where the page is not mapped (the
#: portable path reads its word from the file; the mapped page is one C call).
_COUNTER_CALLS: tuple[str, ...] = ()
if _platform.PORTABLE:
    _COUNTER_CALLS = ("_control.py:ControlPage.commits", "_control.py:ControlPage._get")
    _COUNTER_CALLS += ("_control.py:ControlPage._pread", "_platform.py:pread")


@pytest.fixture
def store(store_path: str) -> Iterator[filemem.Store]:
    with filemem.Store(store_path, cache_ttl_s=60) as s:
        s.put(NS, "flat", {"task": "login", "ok": True, "n": 1, "text": "x"})
        s.put(NS, "nested", {"tags": ["a", "b"], "meta": {"k": 1}})
        s.put(NS, "list", [1, 2, 3])
        s.put(NS, "scalar", "hello")
        for key in ("flat", "nested", "list", "scalar"):
            s.get(NS, key)
            s.get(NS, key)  # hot now
        yield s


def _calls_during(fn: Any, *args: Any) -> list[str]:
    seen: list[str] = []

    def prof(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call":
            code = frame.f_code
            seen.append(f"{os.path.basename(code.co_filename)}:{code.co_qualname}")

    sys.setprofile(prof)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
    return seen


@pytest.mark.store_format(2)
def test_a_hot_get_calls_no_python_function_below_the_backend(store: filemem.Store) -> None:
    hits = store.stats().get("hot_hits")
    calls = _calls_during(store.get, NS, "flat")
    below = [c for c in calls if c not in ("_store.py:Store.get", "_backend.py:FileBackend.get")]
    assert below == list(_COUNTER_CALLS)
    assert "_backend.py:FileBackend.get" in calls
    if hits is not None:
        assert store.stats()["hot_hits"] == hits + 1  # it was the hot path that answered


@pytest.mark.store_format(2)
def test_a_hot_get_makes_no_system_call(store: filemem.Store) -> None:
    me = threading.get_ident()
    made: list[str] = []
    saved = {name: getattr(os, name) for name in ("stat", "lstat", "fstat", "open", "read", "pread", "scandir")}

    def guard(name: str) -> Any:
        real = saved[name]

        def call(*a: Any, **k: Any) -> Any:
            if threading.get_ident() == me:  # the watcher thread may read its events meanwhile
                made.append(name)
            return real(*a, **k)

        return call

    for name in saved:
        setattr(os, name, guard(name))
    try:
        for _ in range(3):
            got = (store.get(NS, "flat"), store.get(NS, "scalar"))
    finally:
        for name, real in saved.items():
            setattr(os, name, real)
    # Portable: one read of the counter word per get (six gets), nothing else.
    assert made == (["read"] * 6 if _platform.PORTABLE else [])
    assert got == ({"task": "login", "ok": True, "n": 1, "text": "x"}, "hello")


@pytest.mark.parametrize("key", ["flat", "nested", "list"])
def test_a_hot_get_hands_out_a_copy(store: filemem.Store, key: str) -> None:
    first = store.get(NS, key)
    want = store.get(NS, key, consistency="strict")
    if isinstance(first, dict):
        first["added"] = True
        for v in first.values():
            if isinstance(v, (list, dict)):
                v.clear()
    else:
        first.append(99)
    assert store.get(NS, key) == want
    assert store.get(NS, key) is not store.get(NS, key)


@pytest.mark.store_format(2)  # format 1 sees another handle's write when its watcher wakes: eventually
def test_a_hot_key_written_by_another_handle_is_never_served_stale(store_path: str) -> None:
    with filemem.Store(store_path, cache_ttl_s=60) as s, filemem.Store(store_path) as t:
        s.put(NS, "k", {"n": 0})
        s.put(NS, "other", 1)
        for n in range(1, 20):
            for _ in range(3):
                assert s.get(NS, "k") == {"n": n - 1}  # hot
            t.put(NS, "k" if n % 2 else "other", {"n": n} if n % 2 else n)
            if n % 2 == 0:
                t.put(NS, "k", {"n": n})
            assert s.get(NS, "other") in (1, *range(n + 1))  # reads the new frames in first
            assert s.get(NS, "k") == {"n": n}
