"""A fresh cached read makes no system call on a v2 store either: the commit counter is read from the mapped page."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import time
from collections.abc import Iterator

import pytest

import filemem
from filemem._wal import _platform
from tests.cache._util import make_store
from tests.helpers import settle

NS = ("agent", "facts")


class SyscallMade(Exception):
    """A cached read reached for the operating system."""


_TRAPPED = ("stat", "lstat", "fstat", "open", "read", "listdir", "scandir", "access", "getpid", "readlink")


@contextlib.contextmanager
def no_syscalls() -> Iterator[list[str]]:
    """Make the usual file-system entry points raise (and record) for the duration."""
    calls: list[str] = []

    def trap(name: str) -> object:
        def raiser(*args: object, **kwargs: object) -> None:
            calls.append(f"{name}{args[:1]!r}")
            raise SyscallMade(name)

        return raiser

    saved = {name: getattr(os, name) for name in _TRAPPED}
    saved_open = builtins.open, io.open
    try:
        for name in _TRAPPED:
            setattr(os, name, trap(f"os.{name}"))
        builtins.open = io.open = trap("open")  # type: ignore[assignment]
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(os, name, fn)
        builtins.open, io.open = saved_open


@pytest.mark.skipif(_platform.PORTABLE, reason="the control page is read with pread when it is not mapped")
@pytest.mark.parametrize("watch", ["auto", "off"])
def test_fresh_cached_read_makes_no_system_call(store_path: str, watch: str) -> None:
    with make_store(store_path, watch="off") as writer, make_store(store_path, watch=watch) as reader:
        writer.put(NS, "k", {"v": 1})
        writer.put(NS, "other", 2)
        settle(writer)  # in the shard files, so the strict read below must stat one
        empty = ("nobody", "here")

        def reads() -> list[object]:
            return [
                reader.get(NS, "k"),
                reader.get_item(NS, "k").value,  # type: ignore[union-attr]
                reader.get(NS, "missing", "dflt"),  # absent key of an existing shard
                reader.get(empty, "x", "dflt"),  # absent shard: the cache remembers absence
                (NS, "other") in reader,
                reader.mapping(NS)["k"],
            ]

        expected = [{"v": 1}, {"v": 1}, "dflt", "dflt", True, {"v": 1}]
        assert reads() == expected  # warms the cache (and starts the watcher)
        time.sleep(0.1)  # nothing writes now; any straggling event would show in the counter
        assert reads() == expected
        before = reader.stats()
        with no_syscalls() as calls:
            for _ in range(3):
                got = reads()
            # The trap is live: a strict read must reach the file system.
            with pytest.raises(SyscallMade):
                reader.get(NS, "k", consistency="strict")
        strict_calls = calls.pop()
        assert calls == [], f"fresh cached reads made system calls: {calls}"
        assert "stat" in strict_calls
        assert got == expected
        after = reader.stats()
        assert after["cache"]["invalidations"] == before["cache"]["invalidations"]  # no event refreshed it
        assert after["shard_parses"] == before["shard_parses"]


def _fill(writer: filemem.Store, n: int, value: object = "v") -> list[tuple[str, ...]]:
    namespaces = [("bound", f"ns{i:02d}") for i in range(n)]
    for ns in namespaces:
        writer.put(ns, "k", value)
    return namespaces


def _parses(store: filemem.Store, ns: tuple[str, ...]) -> int:
    """Shard parses one cached read of ``ns`` cost (0: it was still cached)."""
    before = store.stats()["shard_parses"]
    assert store.get(ns, "k") == "v"
    return int(store.stats()["shard_parses"] - before)
