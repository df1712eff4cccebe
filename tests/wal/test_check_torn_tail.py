"""``check`` and the log's tail: a torn tail is reported and zeroed; a write in progress is not torn.

``check`` scans the log without the append lock, so on a live store it can
meet a writer's frame half written. That is no finding: under the append
lock the frame is whole and ``appended`` has moved past it (a live check
reported "torn-log" once in 1,873 rounds, tests/concurrency/test_live_check.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
from filemem._wal import _format, _platform

NS = ("t",)


def _log(store: filemem.Store) -> Any:
    log = store._backend.engine.log
    assert log is not None, "a format-2 store"
    return log


def _garbage_at_end(store: filemem.Store) -> int:
    """Write half a frame's worth of nonsense where the next frame would go; return that position."""
    log = _log(store)
    end = log._control().appended
    path = os.path.join(log.dir, _format.segment_name(_format.segment_of(end)))
    fd = os.open(path, os.O_RDWR)
    try:
        _platform.pwrite(fd, b"\x13\x37" * 20, _format.offset_of(end))
    finally:
        os.close(fd)
    return end


def _writer_finishes_first(checker: filemem.Store, writer: filemem.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """``checker``'s next look under the append lock comes after ``writer``'s frame landed whole over the tail."""
    log = _log(checker)
    locked = log._append_locked

    @contextlib.contextmanager
    def writer_finishes_first() -> Iterator[None]:
        # Between the scan and the lock, the writer's frame lands whole over those bytes.
        writer.put(NS, "b", 2)
        with locked():
            yield

    monkeypatch.setattr(log, "_append_locked", writer_finishes_first)


def test_a_torn_tail_is_reported_and_zeroed(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        store.put(NS, "a", 1)
        _garbage_at_end(store)
        found = [f for f in store.check() if f.code == "torn-log"]
        assert len(found) == 1 and not found[0].fixed
        fixed = [f for f in store.check(fix=True) if f.code == "torn-log"]
        assert len(fixed) == 1 and fixed[0].fixed
        assert store.check() == []
        store.put(NS, "b", 2)
        assert store.get(NS, "a") == 1 and store.get(NS, "b") == 2


def test_a_write_in_progress_during_the_scan_is_not_torn(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with filemem.Store(store_path) as store, filemem.Store(store_path) as writer:
        store.put(NS, "a", 1)
        _garbage_at_end(store)  # what the scan sees: a frame being written there
        _writer_finishes_first(store, writer, monkeypatch)
        assert [f for f in store.check(fix=True) if f.code == "torn-log"] == []
        monkeypatch.undo()
        assert store.check() == []
        assert store.get(NS, "b") == 2


def test_a_read_only_check_looks_again_too(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's ``check`` without ``--fix`` opens read-only: it must not call a write in progress torn."""
    with filemem.Store(store_path) as writer:
        writer.put(NS, "a", 1)
        with filemem.Store(store_path, readonly=True) as reader:
            _garbage_at_end(writer)
            _writer_finishes_first(reader, writer, monkeypatch)
            assert [f for f in reader.check() if f.code == "torn-log"] == []
            monkeypatch.undo()
            # A tail that is really torn is still reported by the read-only handle (and left alone).
            _garbage_at_end(writer)
            found = [f for f in reader.check() if f.code == "torn-log"]
            assert len(found) == 1 and not found[0].fixed


def test_a_read_only_handle_holding_the_append_lock_waits_only_for_the_page(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_control(held=True)`` on a read-only handle meeting a page mid-update must not take the append lock again."""
    with filemem.Store(store_path) as writer:
        writer.put(NS, "a", 1)
        with filemem.Store(store_path, readonly=True, lock_timeout_s=2.0) as reader:
            log = _log(reader)
            real = log.control.read
            stuck = [True]

            def read_once_mid_update() -> Any:
                if stuck:
                    return stuck.pop() and None  # the page seen mid-update once
                return real()

            monkeypatch.setattr(log.control, "read", read_once_mid_update)
            with log._append_locked():
                assert log._control(held=True).appended == writer._backend.engine.log._control().appended
            assert not stuck, "the page was seen mid-update"
