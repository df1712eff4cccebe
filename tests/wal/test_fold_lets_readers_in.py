"""A fold lets a waiting listing or snapshot in between two installs of a step; it restarts if another folded meanwhile.

A listing that meets splits, and a snapshot, hold every process's folds off
(``wal/fold.lock`` shared); a fold holds that lock exclusively. Before, a
waiter waited for the whole checkpoint step in progress: 4 MiB steps into
1 KiB shards took longer than the 10 s lock timeout on a loaded machine
(issue 13; tests/concurrency/test_crash.py). The fold now lets go between two
installs when someone waits (``LogFold._let_readers_in``), and if another
fold moved the checkpoint while it waited, it starts again from there
(``FoldSupersededError``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import filemem
from filemem import _locks
from filemem._engine import _log as engine_log
from filemem._engine._reads import FOLD_WAIT_LOCK
from filemem._wal import _fold, _platform
from filemem._wal._fold import read_checkpoint
from filemem._wal._log_core import FOLD_LOCK

NS = ("agent", "facts")
KEYS = 3000


def _engine(store: filemem.Store) -> Any:
    return store._backend.engine  # type: ignore[attr-defined]


def _fill(store: filemem.Store) -> None:
    for i in range(KEYS):
        store.put(NS, f"k-{i}", {"n": i, "text": "t" * 200})


def _wait_lock_free(wal_dir: str) -> bool:
    """Nobody waits to hold the folds off (``_reads.pinned`` holds the wait lock shared while it waits)."""
    probe = _locks.try_exclusive(os.path.join(wal_dir, FOLD_WAIT_LOCK))
    if probe is None:
        return False
    probe.release()
    return True


def _expect_all(store: filemem.Store) -> None:
    got = {it.key: it.value for it in store.items(NS)}
    assert len(got) == KEYS
    for i in range(0, KEYS, 97):
        assert got[f"k-{i}"] == {"n": i, "text": "t" * 200}


def test_a_waiting_listing_gets_in_mid_step_and_sees_everything(
    store_path: str, no_background_fold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pin is had after the step's first install, not after its last; the listing under it is whole."""
    monkeypatch.setattr(engine_log, "FOLD_CHECKPOINT_BYTES", 4 << 20)  # the whole fold is one step
    monkeypatch.setattr(_fold, "RECORDS_PER_INSTALL", 400)  # several installs in it
    with filemem.Store(store_path, shard_max_bytes=4096) as store:
        engine = _engine(store)
        log = engine.log
        assert log is not None
        _fill(store)
        install = engine._install
        installs: list[int] = []
        seen: dict[str, Any] = {}
        waiter: list[threading.Thread] = []

        def pinner() -> None:
            with engine.folds_held():
                seen["installs"] = len(installs)
                seen["items"] = {it.key: it.value for it in store.items(NS)}
                seen["checkpoint"] = read_checkpoint(log.dir)

        def counting(records: list[Any], expired_before: float) -> None:
            install(records, expired_before)
            installs.append(len(records))
            if len(installs) == 1:
                t = threading.Thread(target=pinner)
                t.start()
                waiter.append(t)
                deadline = time.monotonic() + 10
                while _wait_lock_free(log.dir):
                    assert time.monotonic() < deadline, "the pinner never came to wait"
                    time.sleep(0.001)

        engine._install = counting
        assert engine.fold(wait=True)
        waiter[0].join(10)
        assert len(installs) >= 4, installs
        # In before the second install: mid-step, the checkpoint not yet moved.
        assert seen["installs"] == 1, (seen["installs"], len(installs))
        assert seen["checkpoint"] is None
        assert len(seen["items"]) == KEYS
        assert seen["items"]["k-2999"] == {"n": 2999, "text": "t" * 200}
        assert log.fold_yields == 1 and log.fold_restarts == 0
        assert store.stats()["fold_yields"] == 1  # what a person sees
        assert log.unfolded_bytes() == 0
    with filemem.Store(store_path, readonly=True) as r:
        _expect_all(r)
        assert r.check() == []


def test_a_fold_superseded_while_it_let_readers_in_starts_again_from_the_new_checkpoint(
    store_path: str, no_background_fold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older folder folds one step while the first waits: the first re-reads the checkpoint and folds the rest."""
    monkeypatch.setattr(engine_log, "FOLD_CHECKPOINT_BYTES", 256 << 10)  # several steps
    monkeypatch.setattr(_fold, "RECORDS_PER_INSTALL", 200)  # several installs per step
    with (
        filemem.Store(store_path, shard_max_bytes=4096) as a,
        filemem.Store(store_path, shard_max_bytes=4096) as b,
    ):
        _fill(a)
        for i in range(0, KEYS, 7):
            a.put(NS, f"k-{i}", {"n": i, "text": "t" * 200, "again": True})
            a.put(NS, f"k-{i}", {"n": i, "text": "t" * 200})  # newer than the first, same value as _fill
        ea, eb = _engine(a), _engine(b)
        log = ea.log
        assert log is not None
        calls = {"n": 0}
        moved: list[int] = []

        def waiting() -> bool:
            # First call (after the first install of the first step): "someone waits", so the
            # fold lets go of fold.lock; second call (while it waits for them): a folder that
            # takes only fold.lock (a build before wal/folding.lock) folds one step.
            calls["n"] += 1
            if calls["n"] == 1:
                return True
            if calls["n"] == 2:
                assert eb.fold(wait=False, max_bytes=1) is False  # this build's folders wait for the first
                lb = eb.log
                assert lb is not None
                fd = os.open(os.path.join(lb.dir, FOLD_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    assert _platform.lock(fd, exclusive=True, blocking=False)
                    lb._fold_locked(eb._install, 1, eb._shard_of, None)
                finally:
                    os.close(fd)
                cp = read_checkpoint(log.dir)
                assert cp is not None
                moved.append(cp.folded)
            return False

        assert log.fold(ea._install, wait=True, shard_of=ea._shard_of, waiting=waiting)
        assert moved, "the second handle did not fold"
        assert log.fold_yields == 1 and log.fold_restarts == 1
        assert log.unfolded_bytes() == 0
        cp = read_checkpoint(log.dir)
        assert cp is not None and cp.folded > moved[0]
        _expect_all(a)
        _expect_all(b)
    with filemem.Store(store_path, readonly=True) as r:
        _expect_all(r)
        for i in range(0, KEYS, 7):
            got = r.get_item(NS, f"k-{i}")
            assert got is not None and got.version > 0
        assert r.check() == []


def test_a_pin_held_past_the_lock_timeout_makes_the_fold_give_up_with_its_steps_kept(
    store_path: str, no_background_fold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold lets a snapshot in and cannot take its lock back: False, the checkpoint where its last step left it."""
    monkeypatch.setattr(engine_log, "FOLD_CHECKPOINT_BYTES", 256 << 10)
    monkeypatch.setattr(_fold, "RECORDS_PER_INSTALL", 200)
    with filemem.Store(store_path, shard_max_bytes=4096, lock_timeout_s=0.5) as store:
        engine = _engine(store)
        log = engine.log
        assert log is not None
        _fill(store)
        held = threading.Event()
        release = threading.Event()

        def snapshot_holder() -> None:
            with store.snapshot():
                held.set()
                release.wait(10)

        calls = {"n": 0}
        t = threading.Thread(target=snapshot_holder)

        def waiting() -> bool:
            calls["n"] += 1
            if calls["n"] == 1:
                t.start()  # takes the pin as soon as the fold lets go of its lock
                return True
            return not held.is_set()

        try:
            assert not log.fold(engine._install, wait=True, shard_of=engine._shard_of, waiting=waiting)
        finally:
            release.set()
            t.join(10)
        assert log.fold_yields == 1
        assert log.unfolded_bytes() > 0
        assert engine.fold(wait=True)  # the next fold finishes it
        assert log.unfolded_bytes() == 0
        _expect_all(store)
