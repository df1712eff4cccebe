"""The PostgreSQL schema of a filemem store: tables, the version sequence, migrations (issue 16).

Invariant: every table lives in the connection's current schema (``search_path``),
so one database can hold many stores, one per schema; the ``filemem_meta``
row ``schema_version`` says which layout the tables have, and a store of a
newer layout is refused (``UnsupportedFormatError``), never guessed at.

Layout (version 1)::

    filemem_meta      key text PK, value text          schema_version, codec, outbox_pruned_below
    filemem_version   sequence                         every record version, never reused
    filemem_records   (ns, key) PK, both COLLATE "C"
                      value bytea                      the codec's bytes: exact round trip
                      doc jsonb                        a copy for filters (NULL when jsonb cannot hold it)
                      version bigint                   from filemem_version
                      created_at, updated_at, expires_at float8 (seconds since the epoch, server clock)
    filemem_outbox    id bigserial PK, at float8, changes jsonb
                      one row per committed write transaction, ids in commit order

``ns`` is the namespace's segments, each escaped as for directory names
(``filemem._names.escape_segment``: ``[a-z0-9_-]`` and ``%XX``), joined by
``/``. No escaped segment contains ``/``, so in the "C" collation every
namespace under prefix ``p`` sorts in ``[p || '/', p || '0')`` (``'0'`` is
the byte after ``'/'``): whole-segment prefix matching is an index range,
never ``LIKE``.
"""

from __future__ import annotations

from typing import Final

import psycopg

from ..._errors import UnsupportedFormatError

__all__ = ["SCHEMA_VERSION", "ensure_schema"]

SCHEMA_VERSION: Final = 1

_DDL: Final = """
CREATE TABLE IF NOT EXISTS filemem_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS filemem_version AS bigint;
CREATE TABLE IF NOT EXISTS filemem_records (
    ns text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    doc jsonb,
    version bigint NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    expires_at double precision,
    PRIMARY KEY (ns, key)
);
CREATE INDEX IF NOT EXISTS filemem_records_expiry ON filemem_records (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS filemem_outbox (
    id bigserial PRIMARY KEY,
    at double precision NOT NULL,
    changes jsonb NOT NULL
);
"""

#: Serializes the creation of the tables between processes opening a new store at once.
_CREATE_LOCK: Final = 0x46_4D_53_43  # "FMSC"


def ensure_schema(conn: psycopg.Connection[tuple[object, ...]], codec: str | None, *, create: bool) -> str:
    """Create the tables if missing (``create``), check the layout version; return the store's codec name.

    ``conn`` is in autocommit mode. An existing store keeps the codec it was
    created with, as a directory store does.
    """
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass('filemem_meta') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            if not create:
                raise UnsupportedFormatError("no filemem store in this database schema (create=False)")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
            conn.execute(_DDL)
            conn.execute(
                "INSERT INTO filemem_meta (key, value) VALUES ('schema_version', %s), ('codec', %s),"
                " ('outbox_pruned_below', '0') ON CONFLICT (key) DO NOTHING",
                (str(SCHEMA_VERSION), codec or "json"),
            )
        meta: dict[str, str] = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM filemem_meta")}
    version = int(meta.get("schema_version", "0"))
    if version != SCHEMA_VERSION:
        raise UnsupportedFormatError(
            f"the filemem schema in this database is version {version}; this filemem knows {SCHEMA_VERSION}"
        )
    return meta["codec"]
