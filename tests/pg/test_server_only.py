"""What only a server backend has (issue 16): killed connections, restarts, MVCC snapshots, the outbox.

Marked ``pg_only``; every test runs on the throwaway server of tests/conftest.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import filemem
from filemem import Store
from tests import pgserver

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


def _batch_in_flight(s: Store, started: threading.Event, release: threading.Event, out: list[BaseException]) -> None:
    """A batch that writes 200 records and then waits, inside its transaction, in an update function."""

    def hold(v: Any) -> Any:
        started.set()
        release.wait(30)
        return (v or 0) + 1

    try:
        with s.batch() as b:
            for i in range(200):
                b.put("victim", f"k{i:03d}", {"i": i})
            b.update("victim", "zz-last", hold)
    except BaseException as exc:
        out.append(exc)


def test_killed_connection_mid_batch_leaves_nothing(pg_store: Store, pg_url: str) -> None:
    pg_store.put("victim", "before", 1)
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    t = threading.Thread(target=_batch_in_flight, args=(pg_store, started, release, errors))
    t.start()
    try:
        assert started.wait(30)
        # The batch's transaction holds its key locks: find it and kill its backend.
        victims = _admin(
            pg_url,
            "SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction'"
            " AND datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert victims, "the batch's transaction is not open"
        for (pid,) in victims:
            _admin(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        release.set()
        t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], filemem.StorageError), errors
    assert pg_store.keys("victim") == ["before"]  # nothing of the batch, and the store still works
    pg_store.put("victim", "after", 2)
    assert pg_store.keys("victim") == ["after", "before"]


def test_server_restarted_mid_batch_leaves_nothing(pg_url: str, pg_server: pgserver.Server) -> None:
    s = Store(pg_url)
    try:
        s.put("victim", "before", 1)
        started, release = threading.Event(), threading.Event()
        errors: list[BaseException] = []
        t = threading.Thread(target=_batch_in_flight, args=(s, started, release, errors))
        t.start()
        try:
            assert started.wait(30)
            pg_server.restart("immediate")
        finally:
            release.set()
            t.join(60)
        assert len(errors) == 1 and isinstance(errors[0], filemem.StorageError), errors
        deadline = time.monotonic() + 30
        while True:  # the pool replaces its dead connections
            try:
                keys = s.keys("victim")
                break
            except filemem.StorageError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert keys == ["before"]
        s.put("victim", "after", 2)
    finally:
        s.close()


def test_snapshot_blocks_no_writer(pg_store: Store) -> None:
    s = pg_store
    s.put("snap", "a", 1)
    with s.snapshot() as snap:
        assert snap.get("snap", "a") == 1
        t0 = time.monotonic()
        s.put("snap", "a", 2)  # the same key the snapshot read: no lock held
        s.put("snap", "b", 2)
        assert time.monotonic() - t0 < 5
        assert snap.get("snap", "a") == 1
        assert snap.keys("snap") == ["a"]  # no phantom
    assert s.get("snap", "a") == 2


def test_sweeper_deletes_expired_rows(pg_store: Store, pg_url: str) -> None:
    s = pg_store
    for i in range(5):
        s.put("ttl", f"k{i}", i, ttl=0.2)
    s.put("ttl", "keep", 1)
    time.sleep(0.4)
    findings = s.check()
    assert [f.code for f in findings] == ["expired-pending"] and findings[0].details["rows"] == 5
    assert s.compact()["expired_dropped"] == 5
    assert _admin(pg_url, "SELECT key FROM filemem_records") == [("keep",)]
    assert s.check() == []


def _collect(s: Store, prefix: Any = None) -> tuple[filemem.Subscription, list[filemem.Change], threading.Condition]:
    got: list[filemem.Change] = []
    cond = threading.Condition()

    def on_change(change: filemem.Change) -> None:
        with cond:
            got.append(change)
            cond.notify_all()

    return s.subscribe(on_change, namespace_prefix=prefix), got, cond


def _wait(cond: threading.Condition, pred: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    with cond:
        while not pred():
            assert time.monotonic() < deadline, what
            cond.wait(0.1)


def test_feed_resumes_from_the_outbox_after_a_lost_connection(pg_store: Store, pg_url: str) -> None:
    s = pg_store
    sub, got, cond = _collect(s, ("f",))
    with sub:
        s.put("f", "a", 1)
        _wait(cond, lambda: any(c.keys == ("a",) for c in got), "first change")
        feed = s._backend.feed  # type: ignore[attr-defined]
        old_pid = feed.listener_pid
        _admin(pg_url, "SELECT pg_terminate_backend(%s)", (old_pid,))
        # Written while the listener is away: delivered from the outbox on reconnection.
        for k in ("b", "c", "d"):
            s.put("f", k, 1)
        _wait(cond, lambda: {"b", "c", "d"} <= {k for c in got for k in (c.keys or ())}, f"resumed changes: {got}")
        assert feed.reconnects >= 1 and feed.listener_pid != old_pid
    keys = [c.keys for c in got if c.kind == "write"]
    assert keys == [("a",), ("b",), ("c",), ("d",)]  # once each, in commit order
    assert not any(c.kind == "missed" for c in got)


def test_feed_says_missed_when_the_outbox_was_pruned(pg_store: Store, pg_url: str) -> None:
    import psycopg

    s = pg_store
    sub, got, cond = _collect(s)
    with sub:
        s.put("f", "a", 1)
        _wait(cond, lambda: len(got) >= 1, "first change")
        feed = s._backend.feed  # type: ignore[attr-defined]
        with psycopg.connect(pg_url) as admin:
            # Holds the listener's catch-up (it reads filemem_meta) until the rows it needs are pruned.
            admin.execute("LOCK TABLE filemem_meta IN ACCESS EXCLUSIVE MODE")
            _admin(pg_url, "SELECT pg_terminate_backend(%s)", (feed.listener_pid,))
            s.put("f", "b", 1)  # notified while nobody listens
            s.put("f", "c", 1)
            top = admin.execute("SELECT max(id) FROM filemem_outbox").fetchone()[0]  # type: ignore[index]
            admin.execute("DELETE FROM filemem_outbox WHERE id <= %s", (top,))
            admin.execute("UPDATE filemem_meta SET value = %s WHERE key = 'outbox_pruned_below'", (str(top + 1),))
            admin.commit()
        _wait(cond, lambda: any(c.kind == "missed" for c in got), f"a missed change: {got}")
        s.put("f", "d", 1)  # and the feed goes on
        _wait(cond, lambda: any(c.keys == ("d",) for c in got), f"the next change: {got}")
    assert not any(c.keys in (("b",), ("c",)) for c in got)  # lost, and said so instead


def test_large_transaction_notifies_without_keys(pg_store: Store) -> None:
    s = pg_store
    sub, got, cond = _collect(s, ("big",))
    with sub:
        with s.batch() as b:
            for i in range(400):
                b.put("big", f"key-with-a-long-name-{i:05d}", i)
        _wait(cond, lambda: len(got) >= 1, "the batch's change")
    assert got[0].namespace == ("big",) and got[0].kind == "write"
    assert got[0].keys is not None and len(got[0].keys) == 400  # read back from the outbox row


def test_namespace_text_is_a_range_not_like(pg_store: Store, pg_url: str) -> None:
    s = pg_store
    s.put(("t", "a_c"), "k", 1)  # "_" is LIKE's wildcard
    s.put(("t", "abc"), "k", 1)
    s.put(("t", "a%"), "k", 1)
    assert s.list_namespaces(("t", "a_c")) == [("t", "a_c")]
    assert s.list_namespaces(("t", "a%")) == [("t", "a%")]
    rows = _admin(pg_url, "SELECT DISTINCT ns, pg_collation_for(ns) FROM filemem_records ORDER BY 1")
    assert [r[0] for r in rows] == ["t/a%25", "t/a_c", "t/abc"] and rows[0][1] == '"C"'


def test_location_never_shows_the_password_and_postgres_scheme_works(pg_url: str) -> None:
    url = pg_url.replace("postgresql://postgres@", "postgres://postgres:s3cret-pw@", 1)
    if url == pg_url:
        pytest.skip("FILEMEM_PG_URL has a form this test does not rewrite")
    with Store(url) as s:  # trust authentication ignores the password
        s.put("p", "k", 1)
        assert s.backend == "postgres"
        assert "s3cret-pw" not in s.path and "s3cret-pw" not in repr(s) and "s3cret-pw" not in str(s.stats())
        assert s.get("p", "k") == 1


def test_a_schema_of_another_layout_is_refused(pg_url: str) -> None:
    Store(pg_url).close()
    _admin(pg_url, "UPDATE filemem_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(filemem.UnsupportedFormatError, match="version 99"):
        Store(pg_url)


def test_create_false_refuses_an_empty_schema(pg_url: str) -> None:
    with pytest.raises(filemem.UnsupportedFormatError):
        Store(pg_url, create=False)
    assert _admin(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()") == [(0,)]


def test_a_read_on_a_killed_pooled_connection_fails_cleanly_and_the_next_read_works(
    pg_store: Store, pg_url: str
) -> None:
    """Reads take a pooled connection without the context managers (``Connections.fetch``): a broken one is dropped."""
    pg_store.put("ns", "k", {"v": 1})
    assert pg_store.get("ns", "k") == {"v": 1}
    idle = _admin(
        pg_url,
        "SELECT pid FROM pg_stat_activity WHERE state = 'idle' AND datname = current_database()"
        " AND pid <> pg_backend_pid() AND application_name = ''",
    )
    assert idle, "the store's pooled connection is not idle on the server"
    for (pid,) in idle:
        _admin(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
    failures = 0
    for _ in range(3):  # the first read may meet the dead socket; it must say so, not hang or answer wrong
        try:
            assert pg_store.get("ns", "k") == {"v": 1}
            break
        except filemem.StorageError:
            failures += 1
    else:
        pytest.fail("reads kept failing after the pooled connection was killed")
    assert failures <= 1, failures  # 0 only if the read ran before the server ended that backend
    assert pg_store.get("ns", "k") == {"v": 1}
