"""A hot key must not outlive a write to it once the process has read the log in (format 2, found 2026-12-03).

The file backend keeps recently read records in a hot-key table and serves
them without a system call while ``engine.changed()`` says nothing committed.
On format 2 that flag goes back to False as soon as the process reads the
new frames in, for any key: a put of ``k``, then a get of another key, then a
get of ``k`` returned the old value for the whole cache TTL, in the writing
process itself and for another handle's writes. Found by
tests/cache/test_lifecycle.py::test_forked_child_gets_its_own_watcher[warm]
once closing writers stopped folding (an other handle's fold used to clear
the table by luck). Each test below failed on the old code.
"""

from __future__ import annotations

import pytest

import filemem

NS = ("hot", "keys")


def test_own_write_is_read_back_after_reading_another_key(store_path: str) -> None:
    with filemem.Store(store_path, cache_ttl_s=30) as s:
        s.put(NS, "k", 0)
        s.put(NS, "other", 5)
        for _ in range(3):
            assert s.get(NS, "k") == 0  # hot now
        s.put(NS, "k", 1)
        assert s.get(NS, "other") == 5  # reads the new frame in
        assert s.get(NS, "k") == 1


@pytest.mark.store_format(2)  # format 1 shows another handle's write when its watcher wakes: eventually
def test_another_handles_write_is_seen_after_reading_another_key(store_path: str) -> None:
    with filemem.Store(store_path, cache_ttl_s=30) as s, filemem.Store(store_path) as t:
        s.put(NS, "k", 0)
        s.put(NS, "other", 5)
        for _ in range(3):
            assert s.get(NS, "k") == 0
        t.put(NS, "k", 2)
        assert s.get(NS, "other") == 5
        assert s.get(NS, "k") == 2
        assert s.get(NS, "k") == 2  # and hot again, with the new value


def test_a_delete_is_seen_after_reading_another_key(store_path: str) -> None:
    with filemem.Store(store_path, cache_ttl_s=30) as s:
        s.put(NS, "k", 0)
        s.put(NS, "other", 5)
        for _ in range(3):
            assert s.get(NS, "k") == 0
        assert s.delete(NS, "k")
        assert s.get(NS, "other") == 5
        assert s.get(NS, "k") is None
