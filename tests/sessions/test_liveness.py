"""Liveness without heartbeats: a SIGKILLed session is dead at once, its slot free at once; fork-safe."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

import filemem
from tests.helpers import reap

from ._workers import crash_child, read_log, wait_for, wait_then_crash_child


def _wait_exit(p: mp.process.BaseProcess, timeout: float = 30.0) -> None:
    # Not join(): a forked grandchild inherits the child's end of the sentinel
    # pipe, so join() would wait for the grandchild too. is_alive() reaps by pid.
    deadline = time.monotonic() + timeout
    while p.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_sigkilled_session_is_dead_at_once_and_its_slot_reused(
    store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    with filemem.Store(store_path) as store:
        store.limit_sessions(1)
        ready = str(tmp_path / "ready")
        p = spawn_ctx.Process(target=crash_child, args=(store_path, ready, False))
        p.start()
        try:
            wait_for(ready)
            # The child holds the one slot: nobody else starts.
            assert [i.agent for i in store.sessions()] == ["doomed"]
            with pytest.raises(filemem.SessionLimitError):
                store.session("blocked", wait=False)
            os.kill(p.pid or 0, signal.SIGKILL)
            p.join(30)
        finally:
            reap([p])
        assert p.exitcode == -signal.SIGKILL
        session_id = read_log(ready)[0][0]
        # No waiting, no heartbeat timeout: the very next look sees it dead.
        t0 = time.monotonic()
        info = store.session_info(session_id)
        assert info is not None and not info.alive and info.state == "crashed"
        assert info.status == "working" and info.progress == 0.5  # what it last reported survives
        assert store.sessions() == []
        with store.session("next", wait=False) as s:  # its slot is free at once
            assert s.info().alive
        # No sleep or retry above: "at once" is the absence of any wait. The
        # bound only catches a hidden one (generous: the machine may be loaded).
        assert time.monotonic() - t0 < 5.0
        assert [i.state for i in store.sessions(alive=False)] == ["crashed", "ended"]
        assert store.check() == []


def test_dead_session_seen_by_a_waiter_that_was_already_waiting(
    store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    with filemem.Store(store_path) as store:
        store.limit_sessions(1)
        info = _crashed_session_holding(store, store_path, tmp_path, spawn_ctx)
        assert info.state == "crashed"


def _crashed_session_holding(
    store: filemem.Store, store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> filemem.SessionInfo:
    # A waiter (in this process's thread) waits while a child holds the slot; the child is killed.
    holder = store.session("holder")
    ready = str(tmp_path / "waiter-ready")
    waiter = spawn_ctx.Process(target=wait_then_crash_child, args=(store_path, ready))
    waiter.start()
    try:
        wait_for(ready)
        deadline = time.monotonic() + 30
        while not [i for i in store.sessions() if i.state == "waiting"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(waiter.pid or 0, signal.SIGKILL)
        waiter.join(30)
    finally:
        reap([waiter])
    holder.close()
    # The dead waiter's ticket does not block a later, lower-priority arrival.
    with store.session("after", priority=0, wait=False):
        pass
    dead = store.sessions(alive=False)
    assert store.check() == []
    return next(i for i in dead if i.agent == "waiter")


def test_forked_child_does_not_hold_the_session(
    store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    ready = str(tmp_path / "ready")
    p = spawn_ctx.Process(target=crash_child, args=(store_path, ready, True))
    p.start()
    try:
        _wait_exit(p)
    finally:
        reap([p], timeout=0)  # kills it if it is somehow alive
    assert p.exitcode == -signal.SIGKILL
    session_id, grandchild = read_log(ready)[0]
    try:
        [(pid, outcome)] = read_log(str(tmp_path / "ready") + ".grandchild")
        assert pid == grandchild and outcome == "refused"
        os.kill(grandchild, 0)  # the forked child still lives...
        with filemem.Store(store_path) as store:
            info = store.session_info(session_id)
            assert info is not None and not info.alive and info.state == "crashed"  # ...yet the session is dead
    finally:
        os.kill(grandchild, signal.SIGKILL)


def test_close_marks_ended_and_is_idempotent(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        s = store.session("w", metadata={"task": "t"})
        assert s.info().state == "running" and s.info().alive
        s.close()
        s.close()
        assert s.closed
        with pytest.raises(filemem.StoreClosedError):
            s.set_status("late")
        [info] = store.sessions(alive=False)
        assert info.state == "ended" and info.ended_at is not None and info.metadata == {"task": "t"}
        assert sorted(os.listdir(os.path.join(store_path, "sessions"))) == [f"{s.id}.session"]


def test_session_exits_on_exception_as_ended(location: str) -> None:
    with filemem.Store(location) as store:
        with pytest.raises(RuntimeError), store.session("w") as s:
            raise RuntimeError("boom")
        info = store.session_info(s.id)
        assert info is not None and info.state == "ended"


def test_old_records_are_pruned(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from filemem._sessions import _registry

    with filemem.Store(store_path) as store:
        store.session("old").close()
        assert len(store.sessions(alive=None)) == 1
        monkeypatch.setattr(_registry, "ENDED_KEEP_S", -1.0)
        assert store.sessions(alive=None) == []
        assert os.listdir(os.path.join(store_path, "sessions")) == []


def test_closing_the_store_ends_its_sessions(location: str) -> None:
    store = filemem.Store(location)
    s = store.session("w")
    store.close()
    assert s.closed
    with filemem.Store(location) as other:
        [info] = other.sessions(alive=False)
        assert info.state == "ended"


@pytest.mark.parametrize("with_on_stop", [False, True])
def test_a_dropped_session_is_freed_by_refcounting_alone(location: str, with_on_stop: bool) -> None:
    """No reference cycle (facade, watcher) keeps a dropped session's lock and slot until the cyclic GC."""
    with filemem.Store(location) as store:
        store.limit_sessions(1)
        gc.disable()
        try:

            def work() -> tuple[str, filemem.SessionStore]:
                s = store.session("dropped", on_stop=(lambda _s: None) if with_on_stop else None)
                s.store.put("k", "v", 1)
                return s.id, s.store  # the facade outlives the session: it must not keep it

            session_id, facade = work()
            info = store.session_info(session_id)
            assert info is not None and not info.alive and info.state == "crashed"
            store.session("next", wait=False).close()  # its slot is free
            with pytest.raises(filemem.StoreClosedError):
                facade.get("k", "v")
            if with_on_stop:
                assert session_id not in store._sessions().watcher._stop_watch  # no longer polled
        finally:
            gc.enable()
