"""Regressions for the format-2 SIGKILL loss (issue 13): the open lock and the re-derived control page.

The loss needed two faults together, and each test here fails on the code
that had them:

1. ``Log.last_handle`` asked "am I the last handle?" by converting its shared
   ``open.lock`` to exclusive without blocking. On Linux a refused ``flock``
   conversion has already dropped the shared lock (the kernel removes the old
   lock before it tries the new one), so every handle that asked while another
   was open, as each writer restarted onto a log with unfolded records does,
   went on holding no open lock at all.
2. A later opener then got the open lock exclusively, took itself for the
   first, and re-derived the control page from a scan of the log made outside
   the append lock. A live writer that appended and acknowledged a record
   during that scan had it taken back: the page was written with the older
   end, and the next append overwrote the acknowledged frame.

Several handles in one process stand for several processes here: flock locks
belong to an open file description, and each handle opens its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
from filemem._wal import _platform
from filemem._wal._log import OPEN_LOCK, WAL_DIR
from filemem._wal._reader import LogReader, Scan

NS = ("wal", "open")


def _open_lock_free(root: str) -> bool:
    """Whether a newcomer could take the store's open lock exclusively (nobody holds it)."""
    fd = os.open(os.path.join(root, WAL_DIR, OPEN_LOCK), os.O_RDWR)
    try:
        if _platform.lock(fd, exclusive=True, blocking=False):
            _platform.unlock(fd)
            return True
        return False
    finally:
        os.close(fd)


def _log(s: filemem.Store) -> Any:
    log = s._engine.log
    assert log is not None
    return log


def test_asking_whether_it_is_the_last_handle_keeps_the_open_lock(store_path: str) -> None:
    """A handle told "not the last" still holds its shared open lock afterwards."""
    with filemem.Store(store_path) as first, filemem.Store(store_path) as second:
        assert _log(first).last_handle() is False  # second is open
        second.close()
        # first is still open: nobody may take the open lock exclusively now.
        assert not _open_lock_free(store_path)
        assert _log(first).last_handle() is True  # and now it is the last
        assert not _open_lock_free(store_path)  # ... and still holds the lock


def test_a_writer_restarted_onto_unfolded_records_stays_counted_as_open(store_path: str) -> None:
    """The chain in the SIGKILL test: the handle that opened onto unfolded records is not forgotten."""
    with filemem.Store(store_path) as s:
        s.put(NS, "k", 0)
    a = filemem.Store(store_path)
    try:
        pin = a._engine.pin()  # holds folds off: b surely opens onto unfolded records
        assert pin is not None
        try:
            a.put(NS, "k", 1)
            b = filemem.Store(store_path)  # asks whether it is the last handle (to fold what is left)
        finally:
            pin.release()
        try:
            a.close()
            b.put(NS, "k", 2)
            assert not _open_lock_free(store_path)  # b is open
            with filemem.Store(store_path) as c:
                c.put(NS, "other", "after")
                assert c.get(NS, "k") == 2
        finally:
            b.close()
    finally:
        a.close()
    with filemem.Store(store_path) as s:
        assert s.get(NS, "k") == 2
        assert s.get(NS, "other") == "after"
        assert s.check() == []


@pytest.fixture
def write_during_rederive(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Arm ``hook["put"]`` to run in a thread while an opener re-derives the page, just after its scan.

    The opener's unbounded scan is the re-derive's (readers and folds scan up
    to a limit). The hook waits up to 1 s for the put: with the fix the put
    waits for the append lock the opener holds, and completes after it.
    """
    hook: dict[str, Any] = {"put": None, "thread": None, "armed": False}
    real_scan = LogReader.scan

    def scan(self: LogReader, start: int, limit: int | None = None) -> Scan:
        out = real_scan(self, start, limit)
        if limit is None and hook["armed"]:
            hook["armed"] = False
            t = threading.Thread(target=hook["put"])
            hook["thread"] = t
            t.start()
            t.join(1.0)
        return out

    monkeypatch.setattr(LogReader, "scan", scan)
    yield hook
    if hook["thread"] is not None:
        hook["thread"].join(60)


def test_a_rederive_racing_a_live_writer_takes_back_nothing(store_path: str, write_during_rederive: Any) -> None:
    """An opener that re-derives the page while a writer lives must not move the log's end back past its writes.

    The live writer is made lockless by hand: the flock conversion is not
    atomic (the kernel drops the old lock before it grants the new one), so a
    live handle can be without its open lock for an instant even now.
    """
    with filemem.Store(store_path) as s:
        s.put(NS, "k", 0)
    writer = filemem.Store(store_path)
    try:
        writer.put(NS, "k", 1)
        _platform.unlock(_log(writer)._open_fd)  # the conversion window, held open
        acked: list[int] = []

        def put() -> None:
            acked.append(writer.put(NS, "k", 2))

        write_during_rederive["put"] = put
        write_during_rederive["armed"] = True
        opener = filemem.Store(store_path)  # takes the open lock exclusively: re-derives
        try:
            assert write_during_rederive["thread"] is not None, "the opener did not re-derive"
            write_during_rederive["thread"].join(60)
            assert len(acked) == 1
            opener.put(NS, "other", "after")  # appends at the page's end: never over the acknowledged put
            assert opener.get(NS, "k") == 2
            assert writer.get(NS, "k") == 2
        finally:
            opener.close()
    finally:
        writer.close()
    with filemem.Store(store_path) as s:
        assert s.get(NS, "k") == 2
        assert s.get(NS, "other") == "after"
        assert s.check() == []
