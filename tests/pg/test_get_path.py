"""The server get path: one held connection for the first thread in, pooled ones for the rest (issue 16).

``Connections.fetch`` keeps one pooled connection and its cursor out of the
pool for good (no check-out per get); these check that threads sharing a
store still read their own answers, that writes are not starved of
connections by it, and that closing the store hands it back.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import filemem
from filemem import Store

pytestmark = pytest.mark.postgres


def test_threads_reading_and_writing_at_once_each_read_what_was_written(pg_url: str) -> None:
    errors: list[BaseException] = []
    with Store(pg_url) as s:
        for i in range(20):
            s.put("t", f"k{i}", {"i": i, "n": 0})

        def reader(seed: int) -> None:
            try:
                for j in range(300):
                    i = (seed * 7 + j) % 20
                    got: Any = s.get("t", f"k{i}")
                    assert got["i"] == i, got  # never another key's row (a shared cursor would mix them)
            except BaseException as exc:
                errors.append(exc)

        def writer() -> None:
            try:
                for n in range(1, 60):
                    s.put("t", f"k{n % 20}", {"i": n % 20, "n": n})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(t,)) for t in range(6)] + [threading.Thread(target=writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:3]
        assert s.get("t", "k19") == {"i": 19, "n": 59}


def test_a_get_after_close_is_refused_and_the_connection_went_back(pg_url: str) -> None:
    s = Store(pg_url)
    s.put("t", "k", 1)
    assert s.get("t", "k") == 1
    conns = s._backend._conns  # type: ignore[attr-defined]
    assert conns._hot is not None
    s.close()
    assert conns._hot is None
    with pytest.raises(filemem.StoreClosedError):
        s.get("t", "k")
