"""Where sessions live on a PostgreSQL server: three tables and three kinds of advisory lock (issue 16).

Invariant: a session is alive exactly while the server holds its liveness
lock, a *session-level* advisory lock on a 64-bit key held by a connection
that belongs to that session alone (never a pooled one: a pool runs
``pg_advisory_unlock_all()`` when a connection comes back, which would end
every session it held without a word). The server drops the lock the moment
that connection ends, whether the client closed it, was SIGKILLed (the
kernel closes the socket and the idle backend exits on the EOF), or its
host vanished (TCP keepalives: seen within about 30 s). So nobody
heartbeats, and "alive" is read from ``pg_locks``, which takes no lock and
cannot be mistaken for the owner.

Lock spaces (no two overlap: ``pg_locks.objsubid`` is 1 for a 64-bit key,
2 for a pair of 32-bit keys)::

    liveness  pg_advisory_lock(lock_key)               session-level, bigint key, objsubid 1
    slot      pg_try_advisory_lock(scope_key, i)       session-level, (int4, int4), objsubid 2
    gate      pg_advisory_xact_lock(gate_key)          transaction-level, bigint, objsubid 1

Every key is a hash salted with the database and schema, so stores in
different schemas never share a lock. A scope's 31-bit ``scope_key`` could
collide with another scope's (about one chance in two billion per pair); the
two scopes would then share their slot count, never exceed either limit.

Tables (created, if missing, the first time a read-write store opens its
sessions; an existing server store gets them then, with no migration and no
change of ``schema_version``)::

    filemem_sessions        id PK, lock_key, state, ended_at, stop_at, rev, record (the file store's JSON)
    filemem_session_limits  scope PK ('' = the whole store, else the namespace as in filemem_records), max_sessions
    filemem_session_queue   (scope, session_id) PK, priority, arrival: the waiting room's tickets
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import psycopg

__all__ = [
    "ALIVE_SQL",
    "HELD_SQL",
    "ensure_session_tables",
    "gate_key",
    "liveness_key",
    "scope_key",
]

_DDL: Final = """
CREATE TABLE IF NOT EXISTS filemem_sessions (
    id text COLLATE "C" PRIMARY KEY,
    lock_key bigint NOT NULL,
    state text NOT NULL,
    ended_at double precision,
    stop_at double precision,
    rev bigint NOT NULL DEFAULT 1,
    record text NOT NULL
);
CREATE TABLE IF NOT EXISTS filemem_session_limits (
    scope text COLLATE "C" PRIMARY KEY,
    max_sessions integer NOT NULL
);
CREATE TABLE IF NOT EXISTS filemem_session_queue (
    scope text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    priority bigint NOT NULL,
    arrival bigint NOT NULL,
    PRIMARY KEY (scope, session_id)
);
"""
#: The same lock as ``_schema``'s: table creation is serialized between processes.
_CREATE_LOCK: Final = 0x46_4D_53_43  # "FMSC"

#: Liveness locks held right now in this database: (classid, objid) of 64-bit keys.
HELD_SQL: Final = (
    "SELECT classid, objid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
#: True when the session row ``s`` has an owner: its lock_key is held (needs ``held`` from HELD_SQL in a WITH).
ALIVE_SQL: Final = (
    "EXISTS (SELECT 1 FROM held h WHERE h.classid = ((s.lock_key >> 32) & 4294967295)::oid"
    " AND h.objid = (s.lock_key & 4294967295)::oid)"
)


def _hash(salt: str, *parts: str, size: int = 8) -> int:
    digest = hashlib.blake2b("\x00".join((salt, *parts)).encode("utf-8", "surrogatepass"), digest_size=size).digest()
    return int.from_bytes(digest, "big", signed=True)


def liveness_key(salt: str, session_id: str) -> int:
    """The 64-bit advisory key a session holds while it lives."""
    return _hash(salt, "session", session_id)


def gate_key(salt: str, scope: str) -> int:
    """The 64-bit advisory key of a scope's admission gate (held for one transaction)."""
    return _hash(salt, "gate", scope)


def scope_key(salt: str, scope: str) -> int:
    """The first half (31 bits, so ``pg_locks.classid`` shows it unchanged) of a scope's slot keys."""
    return _hash(salt, "slots", scope, size=4) & 0x7FFF_FFFF


def ensure_session_tables(conn: psycopg.Connection[Any], *, create: bool) -> bool:
    """Whether the session tables exist, creating them first if missing and ``create``."""
    with conn.transaction():
        row = conn.execute("SELECT to_regclass('filemem_session_queue') IS NOT NULL").fetchone()
        if row is not None and row[0]:
            return True
        if not create:
            return False
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
        conn.execute(_DDL)
    return True
