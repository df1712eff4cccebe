"""A listing that holds the folds off (filemem._walk's hold) and the folds that make way for it.

The process test is tests/concurrency/test_listing_storm.py; these pin down
the pieces: a scan never runs its caller's loop body under the hold, a held
listing lists everything, and a fold about to start a step backs off while
someone waits to hold folds off.
"""

from __future__ import annotations

import fcntl
import os
from typing import Any

import pytest

import filemem
import filemem.admin
from filemem import _locks, _walk
from filemem._engine._reads import FOLD_WAIT_LOCK
from filemem._wal._log import FOLD_LOCK

pytestmark = pytest.mark.store_format(2)

NS = ("held",)


def _fold_lock_free(path: str) -> bool:
    """Whether nobody holds ``wal/fold.lock`` (shared or exclusive) right now."""
    fd = os.open(os.path.join(path, "wal", FOLD_LOCK), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also lets go of the lock if we got it
    return True


@pytest.fixture
def store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    path = str(tmp_path / "s")
    with filemem.Store(path, shard_max_bytes=1024, durability="flush") as s:
        for i in range(60):
            s.put(NS, f"k{i:02d}", {"i": i, "pad": "h" * 60})
        filemem.admin.fold(s)  # into shards (it splits them)
        for i in range(60, 70):
            s.put(NS, f"k{i:02d}", {"i": i})  # and some in the log only
        monkeypatch.setattr(_walk, "OPTIMISTIC_PASSES", 0)  # every walk holds from its first listing
        yield s


def test_a_held_listing_lists_everything(store: Any) -> None:
    assert len(os.listdir(os.path.join(store.path, "ns", "held"))) > 4  # split: several shards
    assert store.keys(NS) == [f"k{i:02d}" for i in range(70)]
    assert {it.key: it.value["i"] for it in store.items(NS)} == {f"k{i:02d}": i for i in range(70)}
    assert _fold_lock_free(store.path)  # let go once the listing ended


def test_scan_runs_no_loop_body_under_the_hold(store: Any) -> None:
    seen = []
    for batch in store.scan(NS, batch_size=7):
        assert _fold_lock_free(store.path), "the caller's loop body ran while folds were held off"
        seen.extend(it.key for it in batch)
    assert sorted(seen) == [f"k{i:02d}" for i in range(70)]


def test_an_abandoned_scan_lets_go_of_the_hold(store: Any) -> None:
    scan = store.scan(NS, batch_size=7)
    next(scan)
    scan.close()
    assert _fold_lock_free(store.path)


def test_a_fold_makes_way_for_a_waiting_pin(store: Any) -> None:
    store.put(NS, "late", 1)
    engine = store._engine
    with _locks.shared(os.path.join(store.path, "wal", FOLD_WAIT_LOCK), 1.0):
        assert engine.fold(wait=False) is False  # someone waits to hold folds off: not now
        assert engine.log.unfolded_bytes() > 0
    assert engine.fold(wait=False) is True
    assert engine.log.unfolded_bytes() == 0
