"""The write path on PostgreSQL: one transaction per ``apply`` (a put, a delete, an update, a batch) (issue 16).

Invariant: every write transaction first takes a transaction-level advisory
lock on each (namespace, key) it touches, in ascending lock-id order, then
reads those records, decides every op in Python (``if_version`` checks,
``update`` functions) and writes the outcome. So:

* writers of one key exclude each other, also when the key does not exist
  yet (a row lock could not cover that): ``update(fn)`` never loses an
  update and an ``if_version`` check cannot be overtaken between check and
  write (the check-then-write is the conditional write, under the lock);
* all locks are taken in one global order before any row is touched, so two
  batches never deadlock (a deadlock or serialization failure the server
  still reports runs the whole transaction again, ``fn`` included);
* a version is a value of the one sequence ``filemem_version``, drawn under
  the key's lock: it grows with every write of a key and is never reused;
* a ``ConflictError`` or any failure rolls everything back: a batch is all
  or nothing, and the server enforces that even if the client dies;
* a transaction that changed something ends with one outbox row and one
  ``NOTIFY`` (see ``_feed``), written under the feed lock so outbox ids are
  in commit order.

Plain puts of distinct keys (a put, a batch of puts) take one round trip:
the server-side function of ``_put_fn`` does the same steps in the same
order (``one_call``); everything else runs the statements below.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import psycopg

from ..._engine import Op, copy_value
from ..._errors import ConflictError, InvalidValueError, LockTimeout, ReadOnlyError
from ..._shard import Record
from ...codecs import Codec
from ._connect import Connections, RetryableError, translate
from ._names import encode_ns
from ._put_fn import PUT_CALL

if TYPE_CHECKING:
    from ._index import IndexRows

__all__ = ["FEED_LOCK", "NOTIFY_MAX_BYTES", "NOW_SQL", "Writer", "announcement", "lock_id"]

#: The server's clock, in seconds since the epoch: every time a record holds.
NOW_SQL: Final = "extract(epoch from statement_timestamp())::float8"
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; past this the keys are left out.
NOTIFY_MAX_BYTES: Final = 7900
#: Advisory lock id of the change feed (outbox ids in commit order); keys hash elsewhere.
FEED_LOCK: Final = 0x46_4D_46_44  # "FMFD"

_UPSERT: Final = """
INSERT INTO filemem_records AS r (ns, key, value, doc, version, created_at, updated_at, expires_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::text[]::jsonb[], %s::int8[],
                     %s::float8[], %s::float8[], %s::float8[])
ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, doc = excluded.doc, version = excluded.version,
    created_at = excluded.created_at, updated_at = excluded.updated_at, expires_at = excluded.expires_at
"""
_DELETE: Final = "DELETE FROM filemem_records WHERE (ns, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
_SELECT: Final = f"""
SELECT ns, key, value, version, created_at, updated_at, expires_at,
       (expires_at IS NULL OR expires_at > {NOW_SQL}) AS live
FROM filemem_records WHERE (ns, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""
_ANNOUNCE: Final = f"""
WITH l AS (SELECT pg_advisory_xact_lock(%s)),
     o AS (INSERT INTO filemem_outbox (at, changes) SELECT {NOW_SQL}, %s::jsonb FROM l RETURNING id)
SELECT id, pg_notify(%s, id::text || ' ' || %s) FROM o
"""


def lock_id(salt: str, ns: str, key: str) -> int:
    """The advisory lock id of one key of one store (64-bit, signed as PostgreSQL wants it)."""
    digest = hashlib.blake2b(f"{salt}\x00{ns}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(slots=True)
class _Row:
    value: Any  # decoded lazily: only update() needs the old value
    raw: bytes | None
    version: int
    created_at: float
    updated_at: float
    expires_at: float | None


def json_copy(codec: Codec, data: bytes, value: Any) -> str | None:
    """The text of the ``jsonb`` copy of a value, or None when jsonb cannot hold it.

    jsonb refuses ``\\u0000`` and anything JSON cannot say (bytes); filters
    then simply never match the record, and its codec bytes stay exact.
    """
    if codec.name == "json":
        text = data.decode("utf-8")
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):
            return None
    return None if "\\u0000" in text else text


class Writer:
    """Applies lists of ops in single transactions, retrying lost races until the lock timeout."""

    def __init__(
        self,
        conns: Connections,
        codec: Codec,
        *,
        salt: str,
        channel: str,
        max_value_bytes: int,
        readonly: bool,
        location: str,
    ) -> None:
        self.conns = conns
        self.codec = codec
        self.salt = salt
        self.channel = channel
        self.max_value_bytes = max_value_bytes
        self.readonly = readonly
        self.location = location
        self.counters = {"commits": 0, "retries": 0, "notifies": 0}
        #: Called after each commit (the TTL sweeper's clock rides on it).
        self.after_commit: Callable[[], None] | None = None
        #: Called inside each write transaction with (deleted idents, [(ns, key, value)] written):
        #: the search index's postings (``_index.index_writes``) commit with the records.
        self.index: (
            Callable[[psycopg.Connection[Any], list[tuple[str, str]], list[tuple[str, str, Any]]], None] | None
        ) = None
        #: The index rows of a write (``_index.index_rows``), sent with a one-call put.
        self.index_rows: Callable[[list[tuple[str, str]], list[tuple[str, str, Any]]], IndexRows] | None = None
        #: True once the store has ``_put_fn``'s function (a read-write open creates it).
        self.one_call = False

    def apply(self, ops: list[Op]) -> list[Any]:
        """Apply ``ops`` in one transaction, all or nothing; one result per op (as the file engine's)."""
        if self.readonly:
            raise ReadOnlyError(f"store {self.location} was opened read-only")
        # Decided once, outside the retries: a plain put does not depend on what the server holds.
        call = self._one_call_args(ops) if self.one_call else None
        deadline = time.monotonic() + self.conns.lock_timeout_s
        backoff = 0.002
        while True:
            try:
                with self.conns.conn() as conn:
                    try:
                        if call is not None:
                            results = self._put_one_call(conn, ops, call)
                        else:
                            with conn.transaction():
                                results = self._run(conn, ops)
                    except psycopg.Error as exc:
                        raise translate(exc, "write", timeout_s=self.conns.lock_timeout_s) from exc
            except RetryableError:
                self.counters["retries"] += 1
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"write to {self.location} lost every serialization race for {self.conns.lock_timeout_s:.3f}s",
                        waited_s=self.conns.lock_timeout_s,
                    ) from None
                time.sleep(backoff * random.random())  # noqa: S311 - jitter, not crypto
                backoff = min(backoff * 2, 0.1)
                continue
            self.counters["commits"] += 1
            if self.after_commit is not None:
                self.after_commit()
            return results

    def _one_call_args(self, ops: list[Op]) -> tuple[Any, ...] | None:
        """The arguments of ``_put_fn``'s call for ``ops``, or None when they need the statement path.

        Only plain puts of distinct keys: an update's ``fn`` runs here under
        the lock, a delete's feed entry depends on what it found, and a key
        named twice has a version the second op must see.
        """
        if not ops or any(op.kind != "put" for op in ops):
            return None
        nss = [encode_ns(op.namespace) for op in ops]
        keys = [op.key for op in ops]
        if len(set(zip(nss, keys, strict=True))) != len(ops):
            return None
        datas = [check_size(self.codec, op.value, self.max_value_bytes) for op in ops]
        docs = [json_copy(self.codec, d, op.value) for d, op in zip(datas, ops, strict=True)]
        locks = sorted({lock_id(self.salt, ns, key) for ns, key in zip(nss, keys, strict=True)})
        if self.index_rows is not None:
            rows = [(ns, key, op.value) for ns, key, op in zip(nss, keys, ops, strict=True)]
            drop, cols, lens = self.index_rows([], rows)
        else:
            drop, cols, lens = ([], []), ([], [], [], []), ([], [], [])
        touched: dict[str, set[str]] = {}
        for ns, key in zip(nss, keys, strict=True):
            touched.setdefault(ns, set()).add(key)
        full, payload = announcement(touched)
        return (
            locks,
            nss,
            keys,
            datas,
            docs,
            [op.ttl for op in ops],
            [op.if_version for op in ops],
            *drop,
            *cols,
            *lens,
            FEED_LOCK,
            full,
            self.channel,
            payload,
        )

    def _put_one_call(self, conn: psycopg.Connection[Any], ops: list[Op], call: tuple[Any, ...]) -> list[Any]:
        """Plain puts in one statement (its own transaction: ``conn`` is autocommit); see ``_put_fn``."""
        row = conn.execute(PUT_CALL, call).fetchone()
        assert row is not None
        conflict, current, versions = row
        if conflict is not None:  # the function wrote nothing
            op = ops[conflict - 1]
            raise ConflictError(
                f"{'/'.join(op.namespace)}/{op.key}: expected version {op.if_version}, found {current}",
                namespace=op.namespace,
                key=op.key,
                expected=op.if_version,
                current_version=int(current),
            )
        self.counters["notifies"] += 1
        return [int(v) for v in versions]

    def _run(self, conn: psycopg.Connection[Any], ops: list[Op]) -> list[Any]:
        idents = sorted({(encode_ns(op.namespace), op.key) for op in ops})
        locks = sorted({lock_id(self.salt, ns, key) for ns, key in idents})
        with conn.pipeline():
            # Queued and sent together, run in this order: the locks ascend.
            for lid in locks:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lid,))
        cur = conn.execute(_SELECT, ([ns for ns, _ in idents], [k for _, k in idents]))
        state: dict[tuple[str, str], _Row | None] = dict.fromkeys(idents)
        for ns, key, raw, version, created, updated, until, live in cur.fetchall():
            if live:  # an expired record is absent (the sweeper deletes it later)
                state[(ns, key)] = _Row(None, bytes(raw), version, created, updated, until)
        # Versions for every put and update, drawn under the keys' locks, in op order.
        wanted = sum(op.kind != "delete" for op in ops)
        head = conn.execute(
            f"SELECT {NOW_SQL}, array(SELECT nextval('filemem_version') FROM generate_series(1, %s))", (wanted,)
        ).fetchone()
        assert head is not None
        now: float = head[0]
        versions = iter(head[1])
        results: list[Any] = []
        written: dict[tuple[str, str], bytes] = {}  # ident -> codec bytes of its final value
        touched: dict[str, set[str]] = {}
        for op in ops:
            ident = (encode_ns(op.namespace), op.key)
            rec = state[ident]
            current = rec.version if rec is not None else 0
            if op.if_version is not None and op.if_version != current:
                raise ConflictError(
                    f"{'/'.join(op.namespace)}/{op.key}: expected version {op.if_version}, found {current}",
                    namespace=op.namespace,
                    key=op.key,
                    expected=op.if_version,
                    current_version=current,
                )
            if op.kind == "delete":
                results.append(rec is not None)
                if rec is not None:
                    touched.setdefault(ident[0], set()).add(op.key)
                state[ident] = None
                written.pop(ident, None)
                continue
            touched.setdefault(ident[0], set()).add(op.key)
            if op.kind == "update":
                assert op.fn is not None
                old = None
                if rec is not None:
                    if rec.raw is not None:
                        rec.value, rec.raw = self.codec.decode(rec.raw), None
                    old = copy_value(rec.value)
                value = copy_value(op.fn(old))
            else:
                value = op.value
            data = check_size(self.codec, value, self.max_value_bytes)
            expires: float | None
            if op.ttl is not None:
                expires = now + op.ttl
            elif op.kind == "update" and rec is not None:
                expires = rec.expires_at
            else:
                expires = None
            version = int(next(versions))
            state[ident] = _Row(value, None, version, rec.created_at if rec is not None else now, now, expires)
            written[ident] = data
            results.append(copy_value(value) if op.kind == "update" else version)
        self._write(conn, state, written)
        if touched:
            self._announce(conn, touched)
        return results

    def _write(
        self,
        conn: psycopg.Connection[Any],
        state: dict[tuple[str, str], _Row | None],
        written: dict[tuple[str, str], bytes],
    ) -> None:
        gone = [ident for ident, row in state.items() if row is None]
        if gone:
            conn.execute(_DELETE, ([ns for ns, _ in gone], [k for _, k in gone]))
        if written:
            cols: list[list[Any]] = [[] for _ in range(8)]
            for ident, data in written.items():
                row = state[ident]
                assert row is not None
                for col, v in zip(
                    cols,
                    (
                        ident[0],
                        ident[1],
                        data,
                        json_copy(self.codec, data, row.value),
                        row.version,
                        row.created_at,
                        row.updated_at,
                        row.expires_at,
                    ),
                    strict=True,
                ):
                    col.append(v)
            conn.execute(_UPSERT, cols)
        if self.index is not None:
            rows = [(ident[0], ident[1], row.value) for ident in written if (row := state[ident]) is not None]
            self.index(conn, gone, rows)

    def _announce(self, conn: psycopg.Connection[Any], touched: dict[str, set[str]]) -> None:
        """One outbox row and one NOTIFY for the transaction (see _feed for the reader)."""
        full, payload = announcement(touched)
        conn.execute(_ANNOUNCE, (FEED_LOCK, full, self.channel, payload))
        self.counters["notifies"] += 1


def announcement(touched: dict[str, set[str]]) -> tuple[str, str]:
    """(the outbox row's changes, the NOTIFY payload) of a transaction that touched these keys."""
    changes = [[ns, sorted(keys)] for ns, keys in sorted(touched.items())]
    full = json.dumps(changes, ensure_ascii=False, separators=(",", ":"))
    payload = full
    if len(payload.encode()) > NOTIFY_MAX_BYTES:
        # NOTIFY refuses 8000 bytes: name the namespaces only (keys None: re-read them).
        payload = json.dumps([[ns, None] for ns, _ in changes], separators=(",", ":"))
        if len(payload.encode()) > NOTIFY_MAX_BYTES:
            payload = "null"  # too many namespaces even: the listener reads the outbox row
    return full, payload


def record_of(row: tuple[Any, ...], codec: Codec) -> Record:
    """A record dict (as the file engine's) from ``value, version, created_at, updated_at, expires_at``."""
    raw, version, created, updated, expires = row
    rec: Record = {"value": codec.decode(bytes(raw)), "version": version, "created_at": created, "updated_at": updated}
    if expires is not None:
        rec["expires_at"] = expires
    return rec


def check_size(codec: Codec, value: Any, max_value_bytes: int) -> bytes:
    """The codec bytes of ``value``; InvalidValueError when over the limit."""
    data = codec.encode(value)
    if len(data) > max_value_bytes:
        raise InvalidValueError(f"value encodes to {len(data)} bytes; the limit is {max_value_bytes}")
    return data
