"""How often the collector's threads wake and what they build per record (issue 13: collector throughput).

Counted, not timed: each test fails on the code before the change it guards
(the apply thread woken for every journal group or, without a journal, for
every record while it waits for its batch to fill; a flush() that waited out
``batch_timeout``; a stub object per record filled in later).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import filemem
from filemem._collector import _spool
from filemem._collector._journal import JournalFile


class _CountingEvent(threading.Event):
    """An Event that counts the waits a set() ended (wake-ups)."""

    def __init__(self) -> None:
        super().__init__()
        self.wakeups = 0

    def wait(self, timeout: float | None = None) -> bool:
        got = super().wait(timeout)
        self.wakeups += got
        return got


def _collector(store: filemem.Store, monkeypatch: pytest.MonkeyPatch, **cfg: Any) -> Any:
    with monkeypatch.context() as m:
        m.setattr(threading, "Event", _CountingEvent)  # only while the collector makes its events
        return store.collector(**cfg)


def _paced(c: Any, n: int, gap_s: float) -> None:
    for i in range(n):
        c.collect(("agent", "events"), f"k{i}", {"i": i})
        time.sleep(gap_s)


def test_journal_groups_do_not_wake_an_apply_thread_waiting_for_its_batch(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = [0]
    real_append = JournalFile.append

    def append(self: JournalFile, data: bytes | bytearray) -> None:
        groups[0] += 1
        real_append(self, data)

    monkeypatch.setattr(JournalFile, "append", append)
    with filemem.Store(str(tmp_path / "s")) as store:
        c = _collector(store, monkeypatch, batch_size=1000, batch_timeout=30.0)
        try:
            _paced(c, 40, 0.005)  # each record its own journal group, or nearly
            deadline = time.monotonic() + 10
            while c.stats()["accepted"] < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert c.stats()["accepted"] == 40
            woken = c._awake.wakeups
            assert groups[0] >= 8, f"only {groups[0]} journal groups: the test needs several"
            # The first group wakes the idle apply thread; the others arrive while it waits for the
            # batch to fill (30 s) and must not wake it (before: one wake-up per group).
            assert woken <= 2, f"apply thread woken {woken} times for {groups[0]} journal groups"
            assert c.stats()["applied"] == 0  # still filling
            t0 = time.monotonic()
            c.flush()  # a flush ends the wait at once
            assert time.monotonic() - t0 < 10
            assert c.stats()["applied"] == 40
        finally:
            c.close()
        assert [store.get(("agent", "events"), f"k{i}") for i in range(40)] == [{"i": i} for i in range(40)]


def test_records_without_a_journal_do_not_wake_the_apply_thread_one_by_one(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with filemem.Store(str(tmp_path / "s")) as store:
        c = _collector(store, monkeypatch, journal=False, batch_size=1000, batch_timeout=30.0)
        try:
            _paced(c, 50, 0.002)
            woken = c._awake.wakeups
            assert woken <= 2, f"apply thread woken {woken} times for 50 records"  # (before: ~50)
            c.flush()
            assert c.stats()["applied"] == 50
        finally:
            c.close()


def test_a_full_batch_still_wakes_the_apply_thread_at_once(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with filemem.Store(str(tmp_path / "s")) as store:
        c = _collector(store, monkeypatch, batch_size=20, batch_timeout=30.0)
        try:
            for i in range(20):
                c.collect(("agent", "events"), f"k{i}", {"i": i})
            deadline = time.monotonic() + 20
            while c.stats()["applied"] < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert c.stats()["applied"] == 20  # long before batch_timeout
        finally:
            c.close()


def test_flush_does_not_wait_out_batch_timeout(tmp_path: Any) -> None:
    with filemem.Store(str(tmp_path / "s")) as store, store.collector(batch_timeout=30.0) as c:
        c.collect(("agent", "events"), "k", {"i": 1})
        time.sleep(0.2)  # accepted by now (or nearly): the apply thread waits for the batch to fill
        t0 = time.monotonic()
        c.flush()
        assert time.monotonic() - t0 < 15  # (before: the whole 30 s)
        assert store.get(("agent", "events"), "k") == {"i": 1}


def test_the_apply_thread_builds_each_journaled_record_once(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stub per record filled in later: one object per record, made from its frame."""
    stubs = [0]
    real_stub = _spool.Rec.stub

    def stub(cls: type[_spool.Rec], seq: int, prio: int, off: int, size: int) -> _spool.Rec:
        stubs[0] += 1
        return real_stub(seq, prio, off, size)

    monkeypatch.setattr(_spool.Rec, "stub", classmethod(stub))
    with filemem.Store(str(tmp_path / "s")) as store, store.collector(batch_size=100) as c:
        for i in range(500):
            c.collect(
                ("agent", f"ns{i % 3}"),
                f"k{i}",
                {"i": i, "text": "x" * (i % 50)},
                priority=("high", "normal", "low")[i % 3],
            )
        c.flush()
        assert c.stats()["applied"] == 500
        assert stubs[0] == 0
        for i in range(500):
            assert store.get(("agent", f"ns{i % 3}"), f"k{i}") == {"i": i, "text": "x" * (i % 50)}
