"""Status updates from many processes: atomic, never torn, never lost; live figures; stop requests; the feed."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import filemem
from filemem._backends import is_server_url
from tests.helpers import reap

from ._workers import crash_child, lifecycle_child, read_log, status_child, stop_child, wait_for

N_PROCS = 6
UPDATES = 30


def test_status_updates_from_many_processes(location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext) -> None:
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    procs = [spawn_ctx.Process(target=status_child, args=(location, i, UPDATES, ready, go)) for i in range(N_PROCS)]
    with filemem.Store(location) as store:
        try:
            for p in procs:
                p.start()
            deadline = time.monotonic() + 60
            while len(read_log(ready)) < N_PROCS:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            Path(go).touch()
            # Meanwhile, read every record again and again: each is whole, and
            # a session's progress never goes back.
            last: dict[str, float] = {}
            looks = 0
            running = True
            while running:
                running = any(p.is_alive() for p in procs)
                for info in store.sessions(alive=None):
                    looks += 1
                    if info.progress is not None:
                        assert info.progress >= last.get(info.id, 0.0), info
                        last[info.id] = info.progress
                    assert info.status == "started" or info.status.startswith("step-") or info.status == "done"
                time.sleep(0.002)
        finally:
            reap(procs)
        assert [p.exitcode for p in procs] == [0] * N_PROCS and looks > 0
        done = store.sessions(alive=None)
        assert len(done) == N_PROCS
        for info in done:
            # The last update of every process is there, with its figures.
            assert (info.state, info.status, info.progress) == ("ended", "done", 1.0)
            assert info.operations == UPDATES
            assert info.bytes_written == sum(len(f'{{"i":{i}}}') for i in range(UPDATES))
        assert store.check() == []


def test_live_figures_are_refreshed_while_working(location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from filemem._sessions import _session

    monkeypatch.setattr(_session, "FIGURES_EVERY_S", 0.0)
    with filemem.Store(location) as store, store.session("w", namespace="w") as s:
        s.store.put("w", "a", "xyz")
        s.store.get("w", "a")
        info = store.session_info(s.id)
        assert info is not None and (info.operations, info.bytes_written) == (2, len('"xyz"'))
        assert (s.operations, s.bytes_written) == (2, 5)


def test_set_status_checks_its_input(location: str) -> None:
    with filemem.Store(location) as store, store.session("w") as s:
        before = s.info()
        for bad in [("", None), ("x" * 2000, None), ("ok", float("nan")), ("ok", "half"), (3, None)]:
            with pytest.raises(filemem.InvalidValueError):
                s.set_status(*bad)  # type: ignore[arg-type]
        assert s.info() == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"agent": ""},
        {"agent": 3},
        {"agent": "a", "priority": 1.5},
        {"agent": "a", "priority": True},
        {"agent": "a", "metadata": {"x": object()}},
        {"agent": "a", "metadata": ["not", "a", "dict"]},
        {"agent": "a", "timeout": -1},
        {"agent": "a", "on_stop": "not callable"},
        {"agent": "a", "namespace": "../etc"},
    ],
)
def test_bad_session_arguments_change_nothing(location: str, kwargs: dict[str, object]) -> None:
    with filemem.Store(location) as store:
        with pytest.raises(filemem.FileMemError):
            store.session(**kwargs)  # type: ignore[arg-type]
        if not is_server_url(location):
            assert not os.path.exists(os.path.join(location, "sessions"))  # refused before any file
        assert store.sessions(alive=None) == []


def test_request_stop_reaches_another_process(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    ready, out = str(tmp_path / "ready"), str(tmp_path / "out")
    p = spawn_ctx.Process(target=stop_child, args=(location, ready, out))
    with filemem.Store(location) as store:
        try:
            p.start()
            wait_for(ready)
            [[session_id]] = read_log(ready)
            info = store.session_info(session_id)
            assert info is not None and info.alive and not info.stop_requested
            assert store.request_stop(session_id) is True
            p.join(30)
        finally:
            reap([p])
        assert p.exitcode == 0
        assert sorted(read_log(out)) == [["callback", session_id], ["flag", True]]
        info = store.session_info(session_id)
        assert info is not None and info.state == "ended" and info.status == "stopping"
        assert store.request_stop(session_id) is False  # not alive any more
        assert store.request_stop("00000000deadbeef") is False  # unknown
        with pytest.raises(filemem.InvalidKeyError):
            store.request_stop("../../etc/passwd")
        assert store.check() == []


def test_feed_reports_sessions_of_other_processes(
    location: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    seen: list[filemem.Change] = []
    lock = threading.Lock()

    def on_change(change: filemem.Change) -> None:
        with lock:
            seen.append(change)

    def kinds(session_id: str) -> list[str]:
        with lock:
            return [c.kind for c in seen if c.keys == (session_id,)]

    with filemem.Store(location) as store, store.subscribe_sessions(on_change):
        p = spawn_ctx.Process(target=lifecycle_child, args=(location, ready, go))
        crash_ready = str(tmp_path / "crash-ready")
        q = spawn_ctx.Process(target=crash_child, args=(location, crash_ready, False))
        try:
            p.start()
            q.start()
            wait_for(ready)
            wait_for(crash_ready)
            [[observed]] = read_log(ready)
            deadline = time.monotonic() + 10
            while "session-started" not in kinds(observed):  # seen on its own, before any change
                assert time.monotonic() < deadline
                time.sleep(0.01)
            Path(go).touch()
            p.join(30)
            os.kill(q.pid or 0, signal.SIGKILL)
            q.join(30)
        finally:
            reap([p, q])
        [[doomed, _]] = read_log(crash_ready)
        deadline = time.monotonic() + 10
        while (kinds(observed)[-1:], kinds(doomed)[-1:]) != (["session-ended"], ["session-ended"]):
            assert time.monotonic() < deadline, (kinds(observed), kinds(doomed))
            time.sleep(0.01)
        got = kinds(observed)
        assert got[0] == "session-started" and got.count("session-changed") >= 2 and got[-1] == "session-ended"
        assert kinds(doomed)[0] == "session-started"
        info = store.session_info(doomed)
        assert info is not None and info.state == "crashed"  # the watcher's probe recorded the crash


def test_async_session_changes(location: str) -> None:
    async def main() -> list[str]:
        with filemem.Store(location) as store:
            sub = store.session_changes()
            await asyncio.sleep(0.1)
            s = store.session("a")
            kinds = []
            async for change in sub:
                kinds.append(change.kind)
                if change.kind == "session-started":
                    s.close()
                if change.kind == "session-ended":
                    break
            sub.close()
            return kinds

    assert asyncio.run(main()) == ["session-started", "session-ended"]


def test_watcher_logs_failing_scans_and_callbacks_and_keeps_going(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="filemem.sessions")

    def _wait(pred: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 5
        while not pred() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pred()

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "filemem.sessions"]

    def boom(_s: filemem.Session) -> None:
        raise RuntimeError("callback bug")

    calls: list[str] = []
    with filemem.Store(store_path, poll_interval_s=0.02) as store:
        bad = store.session("bad", on_stop=boom)
        good = store.session("good", on_stop=lambda s: calls.append(s.id))
        store.request_stop(bad.id)
        _wait(lambda: any("on_stop callback" in m and bad.id in m for m in messages()))
        store.request_stop(good.id)
        _wait(lambda: calls == [good.id])  # the thread survived the failing callback

        watcher = store._sessions().watcher
        real_scan = watcher._scan
        failures = [0]

        def failing_scan(*, report: bool) -> None:
            failures[0] += 1
            raise OSError("disk on fire")

        missed: list[str] = []
        sub = store.subscribe_sessions(lambda c: missed.append(c.kind))
        watcher._scan = failing_scan  # type: ignore[method-assign]
        _wait(lambda: any("scan failed" in m for m in messages()))
        watcher._scan = real_scan  # type: ignore[method-assign]
        _wait(lambda: "missed" in missed)  # delivered on the subscription's own thread, just after the log
        rec = next(r for r in caplog.records if "scan failed" in r.getMessage())
        assert rec.exc_info is not None and "disk on fire" in str(rec.exc_info[1])
        seen = len(missed)
        store.session("after").close()
        _wait(lambda: len(missed) > seen)  # still watching
        sub.close()
        bad.close()
        good.close()
