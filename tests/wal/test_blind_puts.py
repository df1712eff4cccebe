"""A batch of plain puts from a handle behind the log's end reads none of the log's tail (issue 13).

Two handles of one store (each with its own log handle and overlay, as two
processes would have) take turns: the one that did not write last is behind.
Its plain puts (``put``, ``batch`` of puts, the collector's apply) are logged
with ``created_at`` carried over, without reading the other's frames, and
not added to its overlay; anything else catches up as before. These tests
fail if such a commit reads a frame, if the writer does not see its own write
on the next read (the hot path, ``durability="flush"``), if its overlay takes
its own entries out of log order, or if another kind of write skips the
catch-up. (tests/wal/test_chain_rule.py has the real processes.)
"""

from __future__ import annotations

from typing import Any

import pytest

import filemem
import filemem.admin
from filemem._wal import Log

NS = ("blind", "ns")


def _spy_scans(log: Log, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Frames each scan of ``log``'s reader returned, from now on."""
    real = log.reader.scan
    frames: list[int] = []

    def spying(start: int, end: int | None) -> Any:
        got = real(start, end)
        frames.append(len(got.frames))
        return got

    monkeypatch.setattr(log.reader, "scan", spying)
    return frames


def _log(s: filemem.Store) -> Log:
    log = s._engine.log
    assert log is not None
    return log


def test_plain_puts_behind_the_log_read_no_frame_and_are_read_back(
    pair: tuple[filemem.Store, filemem.Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    b.put(NS, "k", "b0")
    assert b.get(NS, "k") == "b0"  # b's hot table now holds k
    first = b.get_item(NS, "k")
    assert first is not None
    for i in range(5):
        a.put(NS, f"a{i}", i)
    a.put(NS, "k", "a1")  # the log holds k unfolded, by a
    log = _log(b)
    scans = _spy_scans(log, monkeypatch)
    blind = log.blind_commits
    version = b.put(NS, "k", "b1")
    with b.batch() as batch:
        batch.put(NS, "k", "b2")
        batch.put(NS, "k", "b3")  # a key twice in one blind batch
        batch.put(NS, "new", "n")
    assert log.blind_commits == blind + 2
    assert sum(scans) == 0, "a plain put read other writers' frames"
    # Not in this handle's overlay until it reads the log, in order.
    assert log.overlay.tail < log.positions()[0]
    assert log.overlay.get_latest(NS, "k") is None or log.overlay.get_latest(NS, "k").lsn < version
    # Read your writes: the hot path, then the item, then a listing.
    assert b.get(NS, "k") == "b3"
    got = b.get_item(NS, "k")
    assert got is not None and got.value == "b3" and got.version > version
    assert got.created_at == first.created_at < got.updated_at  # carried from b0 through a1 and b1, b2
    assert {it.key: it.value for it in b.items(NS)}["new"] == "n"
    assert log.overlay.tail == log.positions()[0]  # now caught up, own frames included
    again = a.get_item(NS, "k")
    assert again is not None and (again.version, again.created_at) == (got.version, got.created_at)
    filemem.admin.fold(a)
    folded = b.get_item(NS, "k")
    assert folded is not None and (folded.version, folded.created_at) == (got.version, got.created_at)


def test_other_writes_from_a_handle_behind_still_catch_up(
    pair: tuple[filemem.Store, filemem.Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    log = _log(b)
    b.put(NS, "c", 0)
    for kind in ("delete", "update", "if_version", "mixed"):
        a.put(NS, "c", 1)
        a.put(NS, "x", 1)
        scans = _spy_scans(log, monkeypatch)
        blind = log.blind_commits
        if kind == "delete":
            assert b.delete(NS, "x") is True  # it must know a's put to say so
        elif kind == "update":
            assert b.update(NS, "c", lambda n: n + 1) == 2
        elif kind == "if_version":
            item = a.get_item(NS, "c")
            assert item is not None
            b.put(NS, "c", 5, if_version=item.version)
        else:
            with b.batch() as batch:
                batch.put(NS, "c", 7)
                batch.delete(NS, "x")
        assert log.blind_commits == blind, kind
        assert sum(scans) > 0, kind
        monkeypatch.undo()


def test_a_caught_up_writer_decides_as_before(store_path: str) -> None:
    """One writer: its overlay holds its own frames, so nothing is blind (a float created_at where the log says it)."""
    with filemem.Store(store_path) as s:
        log = _log(s)
        for i in range(20):
            s.put(NS, "k", i)
        with s.batch() as b:
            b.put(NS, "k", "x")
        assert log.blind_commits == 0


def test_the_collector_applies_blind_behind_the_log(pair: tuple[filemem.Store, filemem.Store]) -> None:
    a, b = pair
    b.put(NS, "e0", "first")
    first = b.get_item(NS, "e0")
    assert first is not None
    log = _log(b)
    with b.collector(batch_size=50) as c:
        for round_ in range(3):
            a.put(NS, "e0", f"a{round_}")  # b is behind again
            for i in range(20):
                c.collect(NS, f"e{i}", {"round": round_, "i": i})
            c.flush()
    assert log.blind_commits >= 3
    got = b.get_item(NS, "e0")
    assert got is not None and got.value == {"round": 2, "i": 0}
    assert got.created_at == first.created_at
    filemem.admin.fold(b)
    with filemem.Store(b.path, readonly=True) as r:
        cold = r.get_item(NS, "e0")
        assert cold is not None and (cold.value, cold.created_at) == (got.value, got.created_at)
        assert all(r.get(NS, f"e{i}") == {"round": 2, "i": i} for i in range(20))
