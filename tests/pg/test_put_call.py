"""The one-round-trip put on PostgreSQL (issue 16): one statement per put, and how a store gets the function.

Behaviour shared with the file store (conditions, all or nothing, expiry,
processes racing and SIGKILLed) is in tests/conformance/test_puts.py; here
is what only the server has: the statement count, the function's
creation on an existing store, the outbox and the sequence left untouched
by a refused put.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from filemem import ConflictError, Store
from filemem._backends.postgres._put_fn import PUT_FUNCTION

pytestmark = [pytest.mark.postgres, pytest.mark.pg_only]


def _admin(pg_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _has_function(pg_url: str) -> bool:
    rows = _admin(
        pg_url,
        "SELECT count(*) FROM pg_proc WHERE proname = %s AND pronamespace = current_schema()::regnamespace",
        (PUT_FUNCTION,),
    )
    return bool(rows[0][0])


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement a psycopg connection of this process runs, as its SQL text."""
    seen: list[str] = []
    real = psycopg.Connection.execute

    def execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kw: Any) -> Any:
        seen.append(str(query))
        return real(self, query, *args, **kw)

    monkeypatch.setattr(psycopg.Connection, "execute", execute)
    yield seen


def test_a_put_and_a_batch_of_puts_are_one_statement_each(pg_url: str, counted: list[str]) -> None:
    with Store(pg_url) as s:
        s.put("ns", "warm", 0)
        counted.clear()
        s.put("ns", "k", {"text": "one round trip"})
        assert len(counted) == 1 and PUT_FUNCTION in counted[0]
        counted.clear()
        with s.batch() as b:
            for i in range(20):
                b.put(("ns", str(i % 3)), f"k{i}", {"i": i})
        assert len(counted) == 1 and PUT_FUNCTION in counted[0]
        counted.clear()
        s.update("ns", "k", lambda v: v)  # fn runs in Python under the lock: the statement path
        s.delete("ns", "k")
        assert not any(PUT_FUNCTION in q for q in counted) and len(counted) > 2


def test_a_batch_naming_a_key_twice_takes_the_statement_path_and_keeps_the_last(
    pg_url: str, counted: list[str]
) -> None:
    with Store(pg_url) as s:
        counted.clear()
        with s.batch() as b:
            b.put("ns", "k", 1)
            b.put("ns", "k", 2)
        assert not any(PUT_FUNCTION in q for q in counted)
        assert s.get("ns", "k") == 2 and b.results[1] > b.results[0]


def test_a_refused_put_writes_no_outbox_row_and_draws_no_version(pg_url: str) -> None:
    with Store(pg_url) as s:
        v = s.put("ns", "k", 1)
        outbox = _admin(pg_url, "SELECT count(*) FROM filemem_outbox")[0][0]
        seq = _admin(pg_url, "SELECT last_value FROM filemem_version")[0][0]
        with pytest.raises(ConflictError):
            s.put("ns", "k", 2, if_version=v + 1)
        assert _admin(pg_url, "SELECT count(*) FROM filemem_outbox")[0][0] == outbox
        assert _admin(pg_url, "SELECT last_value FROM filemem_version")[0][0] == seq
        assert s.get("ns", "k") == 1


def test_an_existing_store_gets_the_function_on_its_next_read_write_open(pg_url: str) -> None:
    with Store(pg_url) as s:
        s.put("ns", "old", {"text": "written before"})
    # A store made by a filemem without the one-call put: the function is not there.
    _admin(pg_url, f"DROP FUNCTION {PUT_FUNCTION}")
    assert not _has_function(pg_url)
    with Store(pg_url, readonly=True) as ro:  # a read-only open reads and creates nothing
        assert ro.get("ns", "old") == {"text": "written before"}
    assert not _has_function(pg_url)
    with Store(pg_url) as s:
        assert _has_function(pg_url)
        s.put("ns", "new", {"text": "written after"})
        assert sorted(h.item.key for h in s.search("ns", query="written")) == ["new", "old"]


def test_two_stores_opening_at_once_create_the_function_once(pg_url: str) -> None:
    import threading

    with Store(pg_url):
        pass
    _admin(pg_url, f"DROP FUNCTION {PUT_FUNCTION}")
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            with Store(pg_url) as s:
                s.put("ns", threading.current_thread().name, 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener, name=f"t{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and _has_function(pg_url)
