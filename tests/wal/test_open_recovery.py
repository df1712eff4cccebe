"""Opening a store a dead writer left with records unfolded (issue 13): the open does not fold them itself.

The open recovers the log and its control page (synchronously: that is what
makes the records readable), and leaves the fold to the background folder, in
bounded steps. Before, the opener that found itself alone folded the whole
backlog before returning: with small shards, seconds of splits (5-47 s in the
SIGKILL loop of tests/concurrency/test_crash.py). These tests count fold work
and where it ran, never time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import filemem
from filemem._engine import _log as engine_log
from filemem._wal._fold import Installed

NS = ("wal", "recovery")


def _leave_unfolded(path: str, count: int, value: str, **opts: Any) -> None:
    """Write ``count`` records and close as a SIGKILLed writer would leave them: in the log, none folded."""
    s = filemem.Store(path, **opts)
    engine = s._engine
    engine.fold = lambda **_kw: True  # type: ignore[method-assign]  # this writer never folds, not even at close
    for start in range(0, count, 100):
        with s.batch() as b:
            for i in range(start, min(start + 100, count)):
                b.put(NS, f"k{i:05d}", {"i": i, "pad": value})
    log = engine.log
    assert log is not None and log.unfolded_bytes() > 0
    s.close()


def _unfolded_at_rest(path: str) -> int:
    with filemem.Store(path, readonly=True) as ro:
        log = ro._engine.log
        assert log is not None
        return int(log.unfolded_bytes())


def test_open_returns_before_the_backlog_is_folded_and_close_folds_the_rest(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opening thread installs nothing; reads see every record at once; the close leaves nothing unfolded."""
    opts: dict[str, Any] = {"shard_max_bytes": 1024, "durability": "flush"}
    _leave_unfolded(store_path, 400, "x" * 50, **opts)
    assert _unfolded_at_rest(store_path) > 0
    installs: list[tuple[int, int]] = []
    release = threading.Event()
    real = engine_log.LogGlue._install

    def counted(self: Any, records: list[Installed], expired_before: float) -> None:
        installs.append((threading.get_ident(), len(records)))
        # Hold the background fold until the open has been looked at (the old
        # code folded inside the open, on this thread, and never waited here).
        if threading.get_ident() != opener:
            release.wait(30)
        real(self, records, expired_before)

    monkeypatch.setattr(engine_log.LogGlue, "_install", counted)
    opener = threading.get_ident()
    s = filemem.Store(store_path, **opts)
    try:
        assert [n for tid, n in installs if tid == opener] == [], "the open folded the backlog itself"
        # Everything is readable through the overlay before any of it is folded.
        for i in (0, 199, 399):
            assert s.get(NS, f"k{i:05d}") == {"i": i, "pad": "x" * 50}
        assert len(s.items(NS)) == 400
    finally:
        release.set()
        s.close()
    assert sum(n for _, n in installs) >= 400
    assert _unfolded_at_rest(store_path) == 0  # a store at rest has every record in its shards
    with filemem.Store(store_path, **opts) as again:
        assert len(again.items(NS)) == 400


def test_the_background_folder_moves_a_backlog_in_bounded_steps(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog several steps long is folded by several background folds, and is all in the shards afterwards."""
    monkeypatch.setattr(engine_log, "FOLD_STEP_BYTES", 256 << 10)
    monkeypatch.setattr(engine_log, "FOLD_CHECKPOINT_BYTES", 256 << 10)  # a step is at least one checkpoint step
    _leave_unfolded(store_path, 1500, "y" * 1000)
    backlog = _unfolded_at_rest(store_path)
    assert backlog > 4 * engine_log.FOLD_STEP_BYTES
    with filemem.Store(store_path) as s:
        engine = s._engine
        log = engine.log
        assert log is not None
        deadline = time.monotonic() + 120
        while log.unfolded_bytes() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.unfolded_bytes() == 0, "the background folder never finished the backlog"
        assert engine.counters["folds"] >= 4  # one per step, not one for everything
        assert engine.counters["records_folded"] == 1500
        assert s.get(NS, "k01499") == {"i": 1499, "pad": "y" * 1000}
    assert _unfolded_at_rest(store_path) == 0


def test_an_open_that_fails_after_the_engine_started_folding_leaves_no_thread(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold thread a recovery open starts is stopped when the rest of the open fails."""
    from filemem._backends.file import _backend

    _leave_unfolded(store_path, 200, "z" * 20)

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(5, "injected: the watcher cannot start")

    monkeypatch.setattr(_backend, "Freshness", broken)
    with pytest.raises(OSError):
        filemem.Store(store_path)
    assert [t for t in threading.enumerate() if t.name == "filemem-fold"] == []
    monkeypatch.undo()
    assert _unfolded_at_rest(store_path) == 0  # the failed open's close folded what it found
