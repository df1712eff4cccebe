"""Session records and liveness on a PostgreSQL server: the file registry's promises on tables (issue 16).

Invariant (as ``filemem._sessions._registry``): a session is alive exactly
while its owner's dedicated connection holds its liveness lock (see
``_session_tables``); the lock is taken before the record is inserted, so a
record is never seen without it. Only the owner writes its record while it
lives, through that same connection, and only while the record is not final
(``state NOT IN ('ended', 'crashed')``): a connection that was lost cannot
write, and a record already marked crashed is never revived. Whoever sees a
non-final record without its lock marks it ``crashed`` with one conditional
``UPDATE``; several may try at once, one wins, all report the same verdict.
Ended and crashed records stay ``ENDED_KEEP_S`` seconds, then the next
listing deletes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import weakref
from dataclasses import replace
from typing import Any, Final

import psycopg

from ..._errors import StorageError
from ..._sessions import SessionInfo, validate_id
from ..._sessions import _registry as _file_registry
from ..._sessions._record import FINAL_STATES, decode_record, encode_record
from ._connect import Connections, RetryableError, translate
from ._session_tables import ALIVE_SQL, HELD_SQL, ensure_session_tables, liveness_key

__all__ = ["PgRegistry", "SessionConn"]

_log = logging.getLogger("filemem.sessions")

_ROW: Final = (
    f"WITH held AS MATERIALIZED ({HELD_SQL}) SELECT s.id, s.rev, s.record, s.stop_at, {ALIVE_SQL}"
    " FROM filemem_sessions s"
)
_FINAL_SQL: Final = "('ended', 'crashed')"


class SessionConn:
    """The connection one session holds for its whole life: closing it ends the session's locks."""

    def __init__(self, conn: psycopg.Connection[Any], session_id: str) -> None:
        self.conn = conn
        self.session_id = session_id
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return bool(self.conn.closed)

    def release(self) -> None:
        """Close the connection (idempotent); the server drops every lock it held at once.

        In a forked child it does nothing: the socket is the parent's, and
        closing it would say goodbye to the server on the parent's behalf.
        """
        if self._pid != os.getpid() or self.conn.closed:
            return
        with contextlib.suppress(psycopg.Error), self._lock:
            # Unlocked by a statement first: when it returns the server has
            # dropped the locks, so the slot is free for the next admission at
            # once (a bare close is noticed by the server a moment later).
            self.conn.execute("SELECT pg_advisory_unlock_all()")
        with contextlib.suppress(psycopg.Error):
            self.conn.close()

    def __del__(self) -> None:
        # A session dropped without close(): free its locks now, as the file
        # store's lock is freed when its descriptor goes.
        with contextlib.suppress(Exception):
            self.release()


class PgRegistry:
    """The ``filemem_sessions`` table of one store (implements ``filemem._sessions.SessionRegistry``)."""

    def __init__(self, conns: Connections, *, salt: str, location: str, readonly: bool, lock_timeout_s: float) -> None:
        self.conns = conns
        self.salt = salt
        self.dir = f"{location} sessions"
        self.readonly = readonly
        self.lock_timeout_s = lock_timeout_s
        #: This process's live sessions: id -> its connection (slots are taken on it). Weak: a
        #: session dropped without close() must free its connection, hence its locks.
        self.owned: weakref.WeakValueDictionary[str, SessionConn] = weakref.WeakValueDictionary()
        with self.conns.conn() as conn:
            try:
                self.tables = ensure_session_tables(conn, create=not readonly)
            except psycopg.Error as exc:
                raise self._err(exc, "creating the session tables") from exc

    # ------------------------------------------------------------------ plumbing

    def _err(self, exc: psycopg.Error, what: str) -> Exception:
        err = translate(exc, what, timeout_s=self.lock_timeout_s)
        return StorageError(str(err)) if isinstance(err, RetryableError) else err

    def _have_tables(self) -> bool:
        """Whether the session tables exist (a read-only store looks again: a writer may have made them)."""
        if not self.tables:
            with self.conns.conn() as conn:
                try:
                    self.tables = ensure_session_tables(conn, create=False)
                except psycopg.Error as exc:
                    raise self._err(exc, "looking for the session tables") from exc
        return self.tables

    def query(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement on a pooled connection (none when the tables do not exist: read-only)."""
        if not self._have_tables():
            return []
        with self.conns.conn() as conn:
            try:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                raise self._err(exc, what) from exc

    def execute(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement on a pooled connection; the row count."""
        if not self._have_tables():
            return 0
        with self.conns.conn() as conn:
            try:
                return conn.execute(sql, params).rowcount
            except psycopg.Error as exc:
                raise self._err(exc, what) from exc

    # ------------------------------------------------------------------ owner side

    def create(self, info: SessionInfo) -> SessionConn:
        """Open the session's own connection, take its liveness lock, then insert its record."""
        conn = self.conns.connect()
        held = SessionConn(conn, info.id)
        try:
            key = liveness_key(self.salt, info.id)
            # application_name shows who holds what in pg_stat_activity (for a DBA, and health()).
            conn.execute("SELECT set_config('application_name', %s, false)", (f"filemem session {info.id}"[:63],))
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            conn.execute(
                "INSERT INTO filemem_sessions (id, lock_key, state, ended_at, record) VALUES (%s, %s, %s, %s, %s)",
                (info.id, key, info.state, info.ended_at, encode_record(info).decode()),
            )
        except psycopg.Error as exc:
            held.release()
            raise self._err(exc, "starting a session") from exc
        except BaseException:
            held.release()
            raise
        self.owned[info.id] = held
        return held

    def write(self, info: SessionInfo, *, sync: bool | None = None) -> None:
        """The owner rewrites its record, on its own connection, while the record is not final.

        ``sync`` is the file store's fsync choice; on a server every write is
        one autocommit statement either way.
        """
        held = self.owned.get(info.id)
        sql = (
            "UPDATE filemem_sessions SET record = %s, state = %s, ended_at = %s, rev = rev + 1"
            f" WHERE id = %s AND state NOT IN {_FINAL_SQL}"
        )
        params = (encode_record(info).decode(), info.state, info.ended_at, info.id)
        if held is None:
            self.execute("session record", sql, params)
            return
        try:
            with held._lock:
                n = held.conn.execute(sql, params).rowcount
        except psycopg.Error as exc:
            raise StorageError(
                f"session {info.id} lost its connection to the server, so other processes now see it crashed"
                f" ({self._err(exc, 'session record')})"
            ) from exc
        if n == 0 and info.state not in FINAL_STATES:
            raise StorageError(f"session {info.id} was marked crashed (its connection was lost)")

    def finish(self, info: SessionInfo, held: Any) -> None:
        """The owner's last act: record ``info`` (marked ended), then close its connection.

        A session whose connection was lost is already crashed for everyone
        else: closing it just lets go (the record keeps the verdict).
        """
        try:
            self.write(info)
        except StorageError as exc:
            _log.warning("%s", exc)
        finally:
            self.owned.pop(info.id, None)
            held.release()
            with contextlib.suppress(StorageError):
                self.execute("session end", "DELETE FROM filemem_session_queue WHERE session_id = %s", (info.id,))

    def discard(self, session_id: str, held: Any) -> None:
        """Remove every trace of a session that never started (its slot wait failed)."""
        self.owned.pop(session_id, None)
        held.release()
        self.execute("session discard", "DELETE FROM filemem_session_queue WHERE session_id = %s", (session_id,))
        self.execute("session discard", "DELETE FROM filemem_sessions WHERE id = %s", (session_id,))

    def stop_requested(self, session_id: str) -> bool:
        """Whether someone asked this session to stop (one query)."""
        rows = self.query(
            "stop request", "SELECT stop_at IS NOT NULL FROM filemem_sessions WHERE id = %s", (session_id,)
        )
        return bool(rows and rows[0][0])

    # ------------------------------------------------------------------ anyone

    def read(self, session_id: str) -> SessionInfo | None:
        """The record as stored (None: absent or unreadable); ``alive`` not probed."""
        rows = self.query("session read", "SELECT record FROM filemem_sessions WHERE id = %s", (session_id,))
        return _decode(rows[0][0]) if rows else None

    def probe(self, session_id: str) -> bool:
        """Whether the owner of ``session_id`` holds its liveness lock right now."""
        rows = self.query("session probe", f"{_ROW} WHERE s.id = %s", (session_id,))
        if rows:
            return bool(rows[0][4])
        # No record (not yet inserted, or removed): ask the lock itself.
        key = liveness_key(self.salt, session_id)
        got = self.query(
            "session probe",
            f"WITH held AS ({HELD_SQL}) SELECT EXISTS (SELECT 1 FROM held h WHERE h.classid = %s::bigint::oid"
            " AND h.objid = %s::bigint::oid)",
            ((key >> 32) & 0xFFFF_FFFF, key & 0xFFFF_FFFF),
        )
        return bool(got and got[0][0])

    def look(self, session_id: str, *, now: float | None = None) -> SessionInfo | None:
        """Read one session with its liveness, and mark it crashed if its owner died."""
        rows = self.query("session read", f"{_ROW} WHERE s.id = %s", (session_id,))
        if not rows:
            return None
        return self._settle(rows[0], time.time() if now is None else now)

    def rows(self) -> list[tuple[Any, ...]]:
        """Every row: (id, rev, record, stop_at, alive), oldest first."""
        return self.query("session listing", f"{_ROW} ORDER BY s.id")

    def _settle(self, row: tuple[Any, ...], now: float) -> SessionInfo | None:
        session_id, _rev, record, stop_at, alive = row
        info = _decode(record)
        if info is None:
            return None  # check() reports it
        if info.state in FINAL_STATES:
            if (
                not self.readonly
                and info.ended_at is not None
                and info.ended_at < now - _file_registry.ENDED_KEEP_S  # one setting for both backends
                and self.execute(
                    "session pruning",
                    f"DELETE FROM filemem_sessions WHERE id = %s AND state IN {_FINAL_SQL} AND ended_at < %s",
                    (session_id, now - _file_registry.ENDED_KEEP_S),
                )
            ):
                return None
            return replace(info, alive=False)
        if alive:
            return replace(info, alive=True, stop_requested=stop_at is not None)
        return self.bury(info, now)

    def bury(self, info: SessionInfo, now: float) -> SessionInfo:
        """Mark a session whose owner died as crashed (unless it already ended); return the verdict."""
        dead = replace(info, state="crashed", ended_at=now)
        if self.readonly:
            return replace(dead, alive=False)
        n = self.execute(
            "marking a session crashed",
            f"WITH held AS MATERIALIZED ({HELD_SQL}) UPDATE filemem_sessions s SET state = 'crashed', ended_at = %s,"
            f" record = %s, rev = s.rev + 1 WHERE s.id = %s AND s.state NOT IN {_FINAL_SQL} AND NOT {ALIVE_SQL}",
            (now, encode_record(dead).decode(), info.id),
        )
        if n:
            # A waiter that died leaves its tickets: they rank nobody behind it any more.
            self.execute("session cleanup", "DELETE FROM filemem_session_queue WHERE session_id = %s", (info.id,))
            return replace(dead, alive=False)
        got = self.read(info.id)  # someone else settled it (ended, or crashed) first
        return replace(got if got is not None else dead, alive=False)

    def list(self, *, alive: bool | None) -> list[SessionInfo]:
        """Every session (marking dead ones crashed), filtered by liveness, oldest first."""
        now = time.time()
        out = []
        for row in self.rows():
            info = self._settle(row, now)
            if info is not None and (alive is None or info.alive == alive):
                out.append(info)
        return out

    def request_stop(self, session_id: str) -> bool:
        """Ask a live session to stop; False if it is not alive (or unknown)."""
        validate_id(session_id)
        info = self.look(session_id)
        if info is None or not info.alive:
            return False
        self.execute(
            "stop request",
            f"UPDATE filemem_sessions SET stop_at = coalesce(stop_at, %s) WHERE id = %s AND state NOT IN {_FINAL_SQL}",
            (time.time(), session_id),
        )
        return True


def _decode(record: str) -> SessionInfo | None:
    try:
        return decode_record(record.encode())
    except (ValueError, json.JSONDecodeError):
        return None
