"""A consistent read view of a PostgreSQL store: one REPEATABLE READ READ ONLY transaction (issue 16).

Invariant: every read of one snapshot sees the database as of the snapshot's
first statement, which runs when the snapshot is made, and expiry is judged
at that same instant; the transaction takes no row lock, so writers never
wait for a snapshot (MVCC keeps the old row versions it needs). It holds its
own connection until ``close()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import psycopg

from ..._errors import StoreClosedError
from ..._names import validate_key
from ..._snapshot import item_of
from ..._types import Item, NamespaceLike
from ...codecs import Codec
from ._connect import Connections, RetryableError, translate
from ._names import encode_ns
from ._writes import NOW_SQL, record_of

__all__ = ["ServerSnapshot"]

_MISSING: Any = object()


class ServerSnapshot:
    """What :meth:`Store.snapshot` returns on a PostgreSQL store (the methods of :class:`filemem.Snapshot`)."""

    def __init__(self, conns: Connections, codec: Codec, normalize: Callable[[Any], tuple[str, ...]]) -> None:
        self._codec = codec
        self._ns = normalize
        self._conn: psycopg.Connection[Any] | None = conns.connect()
        try:
            self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = self._conn.execute(f"SELECT {NOW_SQL}").fetchone()  # the snapshot is taken here
            assert row is not None
            self._now: float = row[0]
        except psycopg.Error as exc:
            self._conn.close()
            self._conn = None
            raise _err(exc) from exc
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _c(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise StoreClosedError("snapshot is closed")
        return self._conn

    def get(self, namespace: NamespaceLike, key: str, default: Any = None) -> Any:
        """The value at ``key`` as of this snapshot, or ``default``."""
        it = self.get_item(namespace, key)
        return default if it is None else it.value

    def get_item(self, namespace: NamespaceLike, key: str) -> Item | None:
        """The record at ``key`` as of this snapshot, or None."""
        ns = self._ns(namespace)
        key = validate_key(key)
        try:
            row = (
                self._c()
                .execute(
                    "SELECT value, version, created_at, updated_at, expires_at FROM filemem_records"
                    " WHERE ns = %s AND key = %s AND (expires_at IS NULL OR expires_at > %s)",
                    (encode_ns(ns), key, self._now),
                )
                .fetchone()
            )
        except psycopg.Error as exc:
            raise _err(exc) from exc
        return None if row is None else item_of(ns, key, record_of(row, self._codec))

    def items(self, namespace: NamespaceLike) -> list[Item]:
        """Every live record of a namespace as of this snapshot, sorted by key."""
        ns = self._ns(namespace)
        try:
            rows = (
                self._c()
                .execute(
                    "SELECT key, value, version, created_at, updated_at, expires_at FROM filemem_records"
                    " WHERE ns = %s AND (expires_at IS NULL OR expires_at > %s) ORDER BY key",
                    (encode_ns(ns), self._now),
                )
                .fetchall()
            )
        except psycopg.Error as exc:
            raise _err(exc) from exc
        return [item_of(ns, r[0], record_of(r[1:], self._codec)) for r in rows]

    def keys(self, namespace: NamespaceLike) -> list[str]:
        """Every live key of a namespace as of this snapshot, sorted."""
        return [it.key for it in self.items(namespace)]

    def close(self) -> None:
        """End the transaction and close its connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            conn.close()

    def __enter__(self) -> ServerSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _err(exc: psycopg.Error) -> Exception:
    err = translate(exc, "snapshot read")
    return StoreClosedError(f"snapshot lost its transaction: {err}") if isinstance(err, RetryableError) else err
