"""Sessions, health and maintain on both backends (issue 16): the same assertions on files and on PostgreSQL.

The session tests of ``tests/sessions`` that are backend-neutral take
``location`` and run on both backends there (limits and priorities across ten
processes, status updates, stop requests, the session feed); these add what
was file-shaped there: confinement, crash liveness, check, health and maintain.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import filemem
from filemem import Store
from tests.helpers import reap
from tests.sessions._workers import crash_child, read_log, wait_for


def _until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _crash(location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext, tag: str = "c") -> str:
    """A child process starts a session and is SIGKILLed holding it; returns the session id."""
    ready = str(tmp_path / f"ready-{tag}")
    p = spawn_ctx.Process(target=crash_child, args=(location, ready, False))
    p.start()
    try:
        wait_for(ready)
        os.kill(p.pid or 0, signal.SIGKILL)
        p.join(30)
    finally:
        reap([p])
    assert p.exitcode == -signal.SIGKILL
    return str(read_log(ready)[0][0])


def test_session_life_cycle(any_store: Store) -> None:
    s = any_store
    with s.session("w1", priority=3, metadata={"task": "crawl"}, namespace="w1") as sess:
        sess.set_status("running", progress=0.25)
        [info] = s.sessions()
        assert (info.id, info.agent, info.priority, info.metadata) == (sess.id, "w1", 3, {"task": "crawl"})
        assert (info.state, info.status, info.progress, info.alive) == ("running", "running", 0.25, True)
        assert info.namespace == ("w1",) and info.pid == os.getpid()
        assert s.session_info(sess.id) == info
    ended = s.session_info(sess.id)
    assert ended is not None and ended.state == "ended" and not ended.alive and ended.ended_at is not None
    assert s.sessions() == [] and [i.id for i in s.sessions(alive=False)] == [sess.id]
    assert s.session_info("00000000deadbeef") is None
    with pytest.raises(filemem.InvalidKeyError):
        s.session_info("../x")
    assert s.check() == []


def test_confinement_refuses_before_touching_the_store(any_store: Store) -> None:
    s = any_store
    s.put("docs", "howto", "read me")
    s.put("worker-4", "secret", 4)
    with s.session("worker-3", namespace="worker-3", shared=["docs"]) as sess:
        fs = sess.store
        fs.put("worker-3", "k", 1)
        assert fs.get("docs", "howto") == "read me"
        assert set(fs.list_namespaces()) == {("docs",), ("worker-3",)}
        for call in (
            lambda: fs.put("docs", "howto", "defaced"),
            lambda: fs.get("worker-4", "secret"),
            lambda: fs.put("worker-3x", "k", 1),
            lambda: fs.batch().put("worker-4", "k", 1),
        ):
            with pytest.raises(filemem.SessionPermissionError):
                call()
        assert sess.operations == 3
    assert s.get("docs", "howto") == "read me" and s.get("worker-4", "secret") == 4
    assert s.keys("worker-3x") == []
    with pytest.raises(filemem.StoreClosedError):
        fs.get("worker-3", "k")  # the facade dies with its session


def test_stop_request_and_callback_in_process(any_store: Store) -> None:
    s = any_store
    fired = threading.Event()
    with s.session("a", on_stop=lambda _s: fired.set()) as sess:
        assert not sess.stop_requested
        assert s.request_stop(sess.id) is True
        assert sess.stop_requested
        info = s.session_info(sess.id)
        assert info is not None and info.stop_requested
        assert fired.wait(10)
    assert s.request_stop(sess.id) is False  # not alive any more


def test_readonly_store_sees_sessions_and_refuses_to_start_them(location: str) -> None:
    with Store(location) as store, store.session("live") as sess, Store(location, readonly=True) as ro:
        assert [i.id for i in ro.sessions()] == [sess.id]
        with pytest.raises(filemem.ReadOnlyError):
            ro.session("nope")
        with pytest.raises(filemem.ReadOnlyError):
            ro.request_stop(sess.id)
        with pytest.raises(filemem.ReadOnlyError):
            ro.limit_sessions(3)


def test_a_sigkilled_session_is_crashed_and_its_slot_free(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    with Store(location) as store:
        store.limit_sessions(1)
        session_id = _crash(location, tmp_path, spawn_ctx)
        # Files: the very next look. A server: as soon as it has noticed the
        # closed socket (milliseconds; measured by tools/bench_pg_sessions.py).
        _until(lambda: not store.session_info(session_id).alive)  # type: ignore[union-attr]
        info = store.session_info(session_id)
        assert info is not None and info.state == "crashed"
        assert (info.status, info.progress) == ("working", 0.5)  # what it last reported survives
        with store.session("next", wait=False) as sess:  # its slot is free
            assert sess.info().alive
        assert [i.state for i in store.sessions(alive=False)] == ["crashed", "ended"]
        assert store.check() == []


def test_check_and_health_find_a_dead_session_and_maintain_cleans_it(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    with Store(location) as store:
        session_id = _crash(location, tmp_path, spawn_ctx)

        def dead_seen() -> bool:
            return any(f.code == "dead-sessions" for f in store.health(lock_probe_s=0))

        _until(dead_seen)
        [finding] = [f for f in store.health(lock_probe_s=0) if f.code == "dead-sessions"]
        assert finding.severity == "warning" and session_id in finding.details["sessions"]
        assert [f.code for f in store.check()] == ["dead-session"]  # looked at, not fixed
        dry = store.maintain(dry_run=True, lock_probe_s=0)
        assert [s.outcome for s in dry.steps] == ["planned"]
        report = store.maintain(lock_probe_s=0)
        assert report.counts["sessions_cleaned"] == 1 and not report.remaining
        assert store.health(lock_probe_s=0) == [] and store.check() == []
        info = store.session_info(session_id)
        assert info is not None and info.state == "crashed"


def test_health_and_maintain_sweep_expired_records(any_store: Store) -> None:
    s = any_store
    for i in range(5):
        s.put("ns", f"gone-{i}", i, ttl=0.05)
    s.put("ns", "kept", 1)
    time.sleep(0.1)
    assert s.keys("ns") == ["kept"]  # never served
    [f] = [f for f in s.health(lock_probe_s=0) if f.code == "expired-records"]
    # Files count what is still on disk (the log may have dropped some on its own).
    assert 1 <= f.details["expired"] <= 5 and f.severity in ("info", "warning")
    report = s.maintain(lock_probe_s=0)
    assert report.counts["expired_dropped"] == f.details["expired"]
    assert [f.code for f in s.health(lock_probe_s=0)] == []
    assert s.keys("ns") == ["kept"]


@pytest.mark.parametrize("kwargs", [{"budget_s": 0}, {"budget_s": -1.0}, {"lock_probe_s": "x"}, {"dry_run": 1}])
def test_maintain_refuses_bad_arguments(any_store: Store, kwargs: dict[str, object]) -> None:
    any_store.put("ns", "k", 1, ttl=0.01)
    time.sleep(0.03)
    with pytest.raises(filemem.InvalidValueError):
        any_store.maintain(**kwargs)  # type: ignore[arg-type]
    assert any(f.code == "expired-records" for f in any_store.health(lock_probe_s=0))  # nothing was swept


def test_readonly_maintain_only_looks(location: str) -> None:
    with Store(location) as store:
        store.put("ns", "k", 1, ttl=0.01)
    time.sleep(0.03)
    with Store(location, readonly=True) as ro:
        with pytest.raises(filemem.ReadOnlyError):
            ro.maintain()
        report = ro.maintain(dry_run=True, lock_probe_s=0)
        assert "expired-records" in [f.code for f in report.remaining]
