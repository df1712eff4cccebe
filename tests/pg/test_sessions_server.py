"""Sessions, health and check on a server only (issue 16): killed connections, pooled connections, held locks.

The backend-neutral session tests run on both backends (tests/sessions,
tests/conformance/test_sessions.py); these need a server to hold a knife to.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import filemem
from filemem import Store
from tests.helpers import reap
from tests.sessions._workers import crash_child, read_log, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.pg_only]


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    s = Store(pg_url)
    try:
        yield s
    finally:
        s.close()


def _admin(pg_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def _session_backend_pid(pg_url: str, session_id: str) -> int:
    [(pid,)] = _admin(
        pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (f"filemem session {session_id}",)
    )
    return int(pid)


def test_a_session_holds_a_dedicated_connection_with_keepalives(pg_store: Store, pg_url: str) -> None:
    with pg_store.session("w") as s:
        pid = _session_backend_pid(pg_url, s.id)
        # Pooled connections come and go meanwhile; none of them is the session's.
        for i in range(50):
            pg_store.put("ns", f"k{i}", i)
        pooled = {r[0] for r in _admin(pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name = ''")}
        assert pid not in pooled
        held = _admin(pg_url, "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'", (pid,))
        assert held == [(1,)]
        assert s.info().alive
    # Closed: its connection is gone and its lock with it.
    _until(lambda: not _admin(pg_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def test_a_killed_session_connection_is_seen_crashed_and_the_owner_told(pg_store: Store, pg_url: str) -> None:
    pg_store.limit_sessions(1)
    s = pg_store.session("victim")
    s.set_status("working", progress=0.3)
    _admin(pg_url, "SELECT pg_terminate_backend(%s)", (_session_backend_pid(pg_url, s.id),))
    _until(lambda: not pg_store.session_info(s.id).alive)  # type: ignore[union-attr]
    info = pg_store.session_info(s.id)
    assert info is not None and info.state == "crashed" and info.status == "working"
    with pytest.raises(filemem.StorageError, match="lost its connection"):
        s.set_status("still here?")
    with pg_store.session("next", wait=False):  # its slot went with its connection
        pass
    s.close()  # lets go quietly: the record keeps the crash verdict
    info = pg_store.session_info(s.id)
    assert info is not None and info.state == "crashed"
    assert pg_store.check() == []


def test_a_sigkilled_process_is_seen_dead_within_seconds(
    pg_url: str, tmp_path: Path, spawn_ctx: mp.context.SpawnContext
) -> None:
    ready = str(tmp_path / "ready")
    p = spawn_ctx.Process(target=crash_child, args=(pg_url, ready, False))
    p.start()
    with Store(pg_url) as store:
        try:
            wait_for(ready)
            session_id = read_log(ready)[0][0]
            assert store.session_info(session_id).alive  # type: ignore[union-attr]
            os.kill(p.pid or 0, signal.SIGKILL)
            p.join(30)
        finally:
            reap([p])
        # The bound only catches a session that lingers until TCP keepalives
        # (tens of seconds); tools/bench_pg_sessions.py measures the real delay.
        _until(lambda: not store.session_info(session_id).alive, timeout=10)  # type: ignore[union-attr]
        assert store.session_info(session_id).state == "crashed"  # type: ignore[union-attr]


def test_pool_release_does_not_end_a_session(pg_store: Store, pg_url: str) -> None:
    """Pools may run pg_advisory_unlock_all() on the connections they get back; sessions are not on them."""
    with pg_store.session("w") as s:
        # Every pooled connection of the store runs unlock_all: the session lives on.
        for _ in range(4):
            with pg_store._backend._conns.conn() as conn:  # type: ignore[attr-defined]
                conn.execute("SELECT pg_advisory_unlock_all()")
        assert s.info().alive and [i.id for i in pg_store.sessions()] == [s.id]


def test_health_reports_a_key_lock_held_long_and_maintain_leaves_it(pg_store: Store) -> None:
    inside, release = threading.Event(), threading.Event()

    def slow(v: Any) -> Any:
        inside.set()
        release.wait(30)
        return (v or 0) + 1

    t = threading.Thread(target=lambda: pg_store.update("ns", "hot", slow))
    t.start()
    try:
        assert inside.wait(30)
        time.sleep(0.4)
        found = [f for f in pg_store.health(lock_probe_s=0.2) if f.code == "lock-held-long"]
        assert len(found) == 1 and found[0].details["held_s"] >= 0.2 and found[0].severity == "warning"
        report = pg_store.maintain(lock_probe_s=0.2)
        assert [f.code for f in report.remaining] == ["lock-held-long"]  # for a person, never acted on
        assert not [f for f in pg_store.health(lock_probe_s=60) if f.code == "lock-held-long"]
    finally:
        release.set()
        t.join(30)
    assert pg_store.get("ns", "hot") == 1  # the holder was not disturbed
    assert not [f for f in pg_store.health(lock_probe_s=0.2) if f.code == "lock-held-long"]


def test_check_finds_outbox_rows_below_the_prune_mark_and_a_wrong_schema_version(pg_store: Store, pg_url: str) -> None:
    pg_store.put("ns", "k", 1)
    [(top,)] = _admin(pg_url, "SELECT max(id) FROM filemem_outbox")
    _admin(pg_url, "UPDATE filemem_meta SET value = %s WHERE key = 'outbox_pruned_below'", (str(top + 1),))
    [f] = pg_store.check()
    assert f.code == "orphan-outbox" and not f.fixed and f.details == {"rows": 1}
    [f] = pg_store.check(fix=True)
    assert f.fixed and pg_store.check() == []
    _admin(pg_url, "UPDATE filemem_meta SET value = '99' WHERE key = 'schema_version'")
    try:
        assert [f.code for f in pg_store.check()] == ["schema-version"]
    finally:
        _admin(pg_url, "UPDATE filemem_meta SET value = '1' WHERE key = 'schema_version'")


def test_check_fix_removes_stale_tickets_and_dead_sessions(pg_store: Store, pg_url: str) -> None:
    with pg_store.session("w") as s:
        pass
    _admin(
        pg_url,
        "INSERT INTO filemem_session_queue (scope, session_id, priority, arrival) VALUES ('', %s, 0, 1),"
        " ('', 'ffffffffffffffff', 0, 2)",
        (s.id,),
    )
    # A record whose owner is gone without a trace (its lock was never taken here).
    _admin(
        pg_url,
        "INSERT INTO filemem_sessions (id, lock_key, state, record) SELECT 'eeeeeeeeeeeeeeee', 42, 'running',"
        " replace(replace(record, %s, 'eeeeeeeeeeeeeeee'), '\"ended\"', '\"running\"')"
        " FROM filemem_sessions WHERE id = %s",
        (s.id, s.id),
    )
    codes = sorted(f.code for f in pg_store.check())
    assert codes == ["dead-session", "stale-ticket", "stale-ticket"]
    assert all(f.fixed for f in pg_store.check(fix=True))
    assert pg_store.check() == []
    assert pg_store.session_info("eeeeeeeeeeeeeeee").state == "crashed"  # type: ignore[union-attr]


def test_session_tables_are_added_to_an_existing_store(pg_url: str) -> None:
    def exists() -> bool:
        return bool(_admin(pg_url, "SELECT to_regclass('filemem_sessions') IS NOT NULL")[0][0])

    with Store(pg_url) as s:
        s.put("ns", "k", 1)
    assert not exists()  # a store that never used sessions has no session tables
    with Store(pg_url, readonly=True) as ro:
        assert ro.sessions() == [] and ro.session_limits() == {} and ro.check() == []
    assert not exists()  # read-only: nothing created
    with Store(pg_url) as s, s.session("w") as sess:
        assert exists()
        assert [i.id for i in s.sessions()] == [sess.id] and s.get("ns", "k") == 1
