"""store.check() with sessions: clean with live and ended ones; dead ones reported, then cleaned by the next look."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import filemem
from tests.helpers import file_mode, reap

from ._workers import churn_child, crash_child, read_log, wait_for


def _crash_one(store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext, tag: str) -> str:
    ready = str(tmp_path / f"ready-{tag}")
    p = spawn_ctx.Process(target=crash_child, args=(store_path, ready, False))
    p.start()
    try:
        wait_for(ready)
        os.kill(p.pid or 0, signal.SIGKILL)
        p.join(30)
    finally:
        reap([p])
    return str(read_log(ready)[0][0])


def test_check_with_live_and_dead_sessions(store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext) -> None:
    with filemem.Store(store_path) as store:
        store.limit_sessions(5)
        live = store.session("live", namespace="live")
        store.session("done").close()
        store.request_stop(live.id)
        assert store.check() == []  # live, waiting-for-stop and ended sessions are all healthy

        dead = _crash_one(store_path, tmp_path, spawn_ctx, "a")
        findings = store.check()
        assert [(f.code, f.fixed) for f in findings] == [("dead-session", False)]
        assert dead in findings[0].path
        assert store.check() == findings  # check() without fix changes nothing

        # Whoever looks next cleans up: then check() is clean again.
        assert {i.agent for i in store.sessions()} == {"live"}
        assert store.check() == []

        dead2 = _crash_one(store_path, tmp_path, spawn_ctx, "b")
        fixed = store.check(fix=True)
        assert [(f.code, f.fixed, f.action) for f in fixed] == [("dead-session", True, "marked crashed")]
        info = store.session_info(dead2)
        assert info is not None and info.state == "crashed"
        assert store.check() == []
        live.close()
        assert store.check() == []
        sessions_dir = os.path.join(store_path, "sessions")
        for dirpath, _dirs, files in os.walk(sessions_dir):
            assert file_mode(dirpath) == 0o700
            for name in files:
                assert file_mode(os.path.join(dirpath, name)) == 0o600, name


def test_check_finds_and_fixes_leftovers(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        store.session("x").close()
        d = os.path.join(store_path, "sessions")
        Path(d, "0000000000000000aaaa.lock").touch()  # orphan lock
        Path(d, "0000000000000000bbbb.stop").touch()  # stop request for nobody
        Path(d, "0000000000000000cccc.session").write_text("{torn")
        Path(d, "x.session.tmp-999999999-abcd").touch()  # temp of a dead pid
        Path(d, "notes.txt").touch()
        os.makedirs(os.path.join(d, "queue", "store"), exist_ok=True)
        Path(d, "queue", "store", "3_123_0000000000000000dddd.ticket").touch()
        codes = sorted(f.code for f in store.check())
        assert codes == [
            "corrupt-session",
            "foreign-file",
            "orphan-session-lock",
            "stale-stop-request",
            "stale-ticket",
            "temp-file",
        ]
        fixed = store.check(fix=True)
        assert all(f.fixed for f in fixed if f.code != "foreign-file")
        assert [f.code for f in store.check()] == ["foreign-file"]


def test_check_is_clean_while_other_processes_open_and_close_sessions(
    store_path: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    """check() lists the directory once; sessions that close meanwhile are not reported dead or orphaned."""
    stop = str(tmp_path / "stop")
    with filemem.Store(store_path, durability="flush") as store:
        store.limit_sessions(1)  # two churners: one waits (a ticket) while the other runs
        procs = [
            spawn_ctx.Process(target=churn_child, args=(store_path, str(tmp_path / f"ready-{i}"), stop))
            for i in range(2)
        ]
        try:
            for p in procs:
                p.start()
            for i in range(2):
                wait_for(str(tmp_path / f"ready-{i}"))
            findings: dict[str, int] = {}
            checks = 0
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                checks += 1
                for f in store.check():
                    findings[f.code] = findings.get(f.code, 0) + 1
        finally:
            Path(stop).touch()
            reap(procs, timeout=30)
        assert [p.exitcode for p in procs] == [0, 0]
        assert checks > 10
        assert findings == {}
        assert store.check() == []
