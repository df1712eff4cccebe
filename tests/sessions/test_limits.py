"""Limits across processes: never more than max_sessions at once, waiters start by priority then arrival."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

import pytest

import filemem
from filemem._backends import is_server_url
from tests.helpers import reap

from ._workers import hold_child, hold_until_child, read_log, wait_for


def _max_concurrent(events: list[list[object]]) -> int:
    """Most sessions inside at once, from enter/exit lines (an exit at the same instant counts first)."""
    timeline = sorted((int(ts), 0 if kind == "exit" else 1) for kind, _agent, ts, *_ in events)  # type: ignore[call-overload]
    inside = peak = 0
    for _ts, is_enter in timeline:
        inside += 1 if is_enter else -1
        peak = max(peak, inside)
    return peak


def _wait_sessions(store: filemem.Store, n: int, state: str, timeout: float = 90.0) -> list[filemem.SessionInfo]:
    deadline = time.monotonic() + timeout
    while True:
        got = [i for i in store.sessions() if i.state == state]
        if len(got) >= n:
            return got
        assert time.monotonic() < deadline, f"only {len(got)} sessions {state}"
        time.sleep(0.01)


def test_ten_processes_under_max_five_with_priorities(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    log_path = str(tmp_path / "log")
    go = str(tmp_path / "go")
    procs: list[mp.process.BaseProcess] = []
    with filemem.Store(location) as store:
        store.limit_sessions(5)
        try:
            # Five holders fill every slot and keep them until told.
            for i in range(5):
                p = spawn_ctx.Process(target=hold_child, args=(location, f"holder-{i}", 0, log_path, 0.05, go))
                p.start()
                procs.append(p)
            _wait_sessions(store, 5, "running")
            # Five waiters arrive one after another; two share a priority, so
            # arrival decides between them.
            waiters = [("w-a", 1), ("w-b", 5), ("w-c", 3), ("w-d", 5), ("w-e", 9)]
            for n, (agent, prio) in enumerate(waiters, start=1):
                p = spawn_ctx.Process(target=hold_child, args=(location, agent, prio, log_path, 0.05, None))
                p.start()
                procs.append(p)
                _wait_sessions(store, n, "waiting")
            assert len(store.sessions()) == 10  # every process sees all ten: 5 running, 5 waiting
            with pytest.raises(filemem.SessionLimitError) as info:
                store.session("impatient", wait=False)
            assert info.value.limit == 5 and info.value.scope == ()
            Path(go).touch()
            reap(procs, timeout=60)
        finally:
            Path(go).touch()
            reap(procs, timeout=10)
        assert [p.exitcode for p in procs] == [0] * 10
        events = read_log(log_path)
        assert len(events) == 20
        assert _max_concurrent(events) == 5  # reached, never passed
        started = sorted((e[3], e[1]) for e in events if e[0] == "enter" and e[1].startswith("w-"))
        assert [agent for _t, agent in started] == ["w-e", "w-b", "w-d", "w-c", "w-a"]
        assert store.sessions() == []
        assert store.check() == []


def test_ten_processes_competing_at_once(location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext) -> None:
    log_path = str(tmp_path / "log")
    with filemem.Store(location) as store:
        store.limit_sessions(5)
    procs = [
        spawn_ctx.Process(target=hold_child, args=(location, f"p{i}", i % 3, log_path, 0.1, None)) for i in range(10)
    ]
    try:
        for p in procs:
            p.start()
    finally:
        reap(procs, timeout=60)
    assert [p.exitcode for p in procs] == [0] * 10
    events = read_log(log_path)
    assert len(events) == 20
    assert 1 <= _max_concurrent(events) <= 5


def test_wait_false_and_timeout(location: str) -> None:
    with filemem.Store(location) as store:
        store.limit_sessions(1)
        assert store.session_limits() == {(): 1}
        first = store.session("first")
        with pytest.raises(filemem.SessionLimitError, match="wait=False"):
            store.session("second", wait=False)
        t0 = time.monotonic()
        with pytest.raises(filemem.SessionLimitError) as info:
            store.session("third", timeout=0.2)
        assert 0.2 <= time.monotonic() - t0 < 2 and info.value.waited_s >= 0.2
        assert isinstance(info.value, TimeoutError)
        # A session that never started leaves nothing behind.
        assert [i.agent for i in store.sessions(alive=None)] == ["first"]
        first.close()
        with store.session("fourth", wait=False) as s:
            assert s.info().state == "running"
        store.limit_sessions(None)
        assert store.session_limits() == {}
        assert store.check() == []


def test_namespace_limit(location: str) -> None:
    with filemem.Store(location) as store:
        store.limit_sessions(1, namespace="crawlers")
        a = store.session("c1", namespace=("crawlers", "c1"))
        with pytest.raises(filemem.SessionLimitError) as info:
            store.session("c2", namespace=("crawlers", "c2"), wait=False)
        assert info.value.scope == ("crawlers",)
        # Other namespaces, and sessions with none, are not limited.
        b = store.session("o1", namespace="others")
        c = store.session("free")
        for s in (a, b, c):
            s.close()
        store.session("c2", namespace=("crawlers", "c2"), wait=False).close()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", 10**6])
def test_bad_limits_refused(location: str, bad: object) -> None:
    with filemem.Store(location) as store:
        with pytest.raises(filemem.InvalidValueError):
            store.limit_sessions(bad)  # type: ignore[arg-type]
        assert store.session_limits() == {}
        if not is_server_url(location):
            assert not os.path.exists(os.path.join(location, "sessions", "limits.json"))


def test_lowered_limit_counts_slots_taken_under_the_old_one(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    """Four processes run under max_sessions=4; lowered to 2, newcomers wait until fewer than 2 run."""
    procs: list[mp.process.BaseProcess] = []
    gos = [str(tmp_path / f"go-{i}") for i in range(4)]
    with filemem.Store(location) as store:
        try:
            # Raising the limit one at a time gives holder i slot i, so the
            # first to leave frees slot 0: a slot under the new limit.
            for i in range(4):
                store.limit_sessions(i + 1)
                ready = str(tmp_path / f"ready-{i}")
                p = spawn_ctx.Process(target=hold_until_child, args=(location, f"h{i}", ready, gos[i]))
                p.start()
                procs.append(p)
                wait_for(ready)
            store.limit_sessions(2)
            for i in range(2):
                Path(gos[i]).touch()
                procs[i].join(30)
                assert len(store.sessions()) == 3 - i
                with pytest.raises(filemem.SessionLimitError) as info:
                    store.session("new", wait=False)
                assert info.value.limit == 2
            Path(gos[2]).touch()
            procs[2].join(30)
            with store.session("new", wait=False):
                assert len(store.sessions()) == 2
                with pytest.raises(filemem.SessionLimitError):
                    store.session("newer", wait=False)
        finally:
            for go in gos:
                Path(go).touch()
            reap(procs, timeout=30)
        assert [p.exitcode for p in procs] == [0] * 4
        assert store.check() == []


def test_waiters_in_other_processes_see_a_limit_raised_or_removed(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    procs: list[mp.process.BaseProcess] = []
    go = str(tmp_path / "go")
    with filemem.Store(location) as store:
        store.limit_sessions(1)
        held = store.session("holder")
        try:
            for n, change in enumerate((2, None), start=1):
                ready = str(tmp_path / f"ready-{n}")
                p = spawn_ctx.Process(target=hold_until_child, args=(location, f"w{n}", ready, go))
                p.start()
                procs.append(p)
                _wait_sessions(store, 1, "waiting")
                store.limit_sessions(change)  # 1 -> 2 (w1 fits), then none at all (w2 fits)
                wait_for(ready, timeout=5)
                assert [i.state for i in store.sessions()] == ["running"] * (n + 1)
            if not is_server_url(location):
                assert not os.listdir(os.path.join(location, "sessions", "queue", "store"))  # tickets gone
        finally:
            Path(go).touch()
            reap(procs, timeout=30)
            held.close()
        assert [p.exitcode for p in procs] == [0] * 2
        assert store.check() == []


def test_closing_the_store_ends_its_waiters(location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext) -> None:
    """A thread waiting for a slot when its Store closes gives up; it never takes the slot freed later."""
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    with filemem.Store(location) as setup:
        setup.limit_sessions(1)
    p = spawn_ctx.Process(target=hold_until_child, args=(location, "holder", ready, go))
    p.start()
    try:
        wait_for(ready)
        store = filemem.Store(location)
        outcome: list[object] = []

        def waiter() -> None:
            try:
                outcome.append(store.session("waiter"))
            except Exception as exc:  # the outcome is the test
                outcome.append(exc)

        t = threading.Thread(target=waiter)
        t.start()
        _wait_sessions(store, 1, "waiting")
        store.close()
        t.join(5)
        assert not t.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], filemem.StoreClosedError), outcome
        Path(go).touch()  # the holder leaves: its slot must not go to the closed store's waiter
        p.join(30)
    finally:
        Path(go).touch()
        reap([p], timeout=30)
    assert p.exitcode == 0
    with filemem.Store(location) as other:
        assert other.sessions() == []
        other.session("next", wait=False).close()
        assert other.check() == []
