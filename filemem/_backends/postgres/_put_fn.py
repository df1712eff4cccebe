"""Puts in one round trip: the server-side function ``filemem_put_v1`` (issue 16).

Invariant: a call of ``filemem_put_v1`` does, inside the one implicit
transaction of one statement, exactly what ``_writes.Writer`` does for a
list of plain puts of distinct keys, in the same order: take every key's
transaction-level advisory lock in ascending id order; read the live
versions and check each ``if_version`` (the first op that fails is named,
and nothing is written: the function returns before its first write);
draw one version per op from ``filemem_version`` in op order; upsert the
records (an expired row counts as absent, so the record is new: its
``created_at`` is now); rewrite their postings and document lengths (given
by the client, computed by the same ``index_terms`` as everywhere else, so
BM25 scores stay bit-exact); then, under the feed lock, one outbox row and
one NOTIFY. The server's clock is read once (``statement_timestamp()``), as
the statement path reads it per statement within the same transaction.

Why a function: a put through single statements costs ten round trips
(BEGIN, locks, read, versions, upsert, three index statements, the outbox,
COMMIT), each a client wake-up; the function makes it one. Updates
(``fn`` runs in Python under the lock), deletes, and batches naming a key
twice keep the statement path (``Writer._run``).

An existing store gets the function on its next read-write open
(``ensure_put_function``, under the schema-creation lock so two openers do
not race on the catalog); the name carries its version, so a later change
is a new function and never alters one that older clients call.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

__all__ = ["PUT_CALL", "PUT_FUNCTION", "ensure_put_function"]

PUT_FUNCTION: Final = "filemem_put_v1"

_DDL: Final = f"""
CREATE OR REPLACE FUNCTION {PUT_FUNCTION}(
    p_locks int8[], p_ns text[], p_key text[], p_value bytea[], p_doc text[], p_ttl float8[], p_if int8[],
    p_drop_ns text[], p_drop_key text[],
    p_t_term text[], p_t_ns text[], p_t_key text[], p_t_tf int4[],
    p_l_ns text[], p_l_key text[], p_l_len int4[],
    p_feed_lock int8, p_changes text, p_channel text, p_payload text,
    OUT conflict int, OUT current_version int8, OUT versions int8[])
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    v_now float8 := extract(epoch from statement_timestamp())::float8;
    v_lock int8;
    v_id int8;
BEGIN
    -- Ascending, one at a time: the order every writer takes its locks in.
    FOREACH v_lock IN ARRAY p_locks LOOP
        PERFORM pg_advisory_xact_lock(v_lock);
    END LOOP;
    SELECT o.i, coalesce(r.version, 0) INTO conflict, current_version
      FROM unnest(p_ns, p_key, p_if) WITH ORDINALITY AS o(ns, key, ifv, i)
      LEFT JOIN filemem_records r
        ON r.ns = o.ns AND r.key = o.key AND (r.expires_at IS NULL OR r.expires_at > v_now)
     WHERE o.ifv IS NOT NULL AND o.ifv <> coalesce(r.version, 0)
     ORDER BY o.i LIMIT 1;
    IF conflict IS NOT NULL THEN
        RETURN;  -- nothing written yet: the client raises ConflictError
    END IF;
    versions := array(SELECT nextval('filemem_version') FROM generate_series(1, cardinality(p_ns)));
    INSERT INTO filemem_records AS r (ns, key, value, doc, version, created_at, updated_at, expires_at)
    SELECT o.ns, o.key, o.value, o.doc::jsonb, versions[o.i], v_now, v_now, v_now + o.ttl
      FROM unnest(p_ns, p_key, p_value, p_doc, p_ttl) WITH ORDINALITY AS o(ns, key, value, doc, ttl, i)
    ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, doc = excluded.doc, version = excluded.version,
        created_at = CASE WHEN r.expires_at IS NULL OR r.expires_at > v_now THEN r.created_at
                          ELSE excluded.created_at END,
        updated_at = excluded.updated_at, expires_at = excluded.expires_at;
    IF cardinality(p_drop_ns) > 0 THEN
        DELETE FROM filemem_postings t USING unnest(p_drop_ns, p_drop_key) AS g(ns, key)
         WHERE t.ns = g.ns AND t.key = g.key;
        DELETE FROM filemem_vectors t USING unnest(p_drop_ns, p_drop_key) AS g(ns, key)
         WHERE t.ns = g.ns AND t.key = g.key;
        DELETE FROM filemem_doclens t USING unnest(p_drop_ns, p_drop_key) AS g(ns, key)
         WHERE t.ns = g.ns AND t.key = g.key;
        INSERT INTO filemem_postings (term, ns, key, tf) SELECT * FROM unnest(p_t_term, p_t_ns, p_t_key, p_t_tf);
        INSERT INTO filemem_doclens (ns, key, len) SELECT * FROM unnest(p_l_ns, p_l_key, p_l_len);
    END IF;
    -- Last, so the feed lock is held only from here to the commit: outbox ids in commit order.
    PERFORM pg_advisory_xact_lock(p_feed_lock);
    INSERT INTO filemem_outbox (at, changes) VALUES (v_now, p_changes::jsonb) RETURNING id INTO v_id;
    PERFORM pg_notify(p_channel, v_id::text || ' ' || p_payload);
END
$fn$
"""

#: The one statement of a put (autocommit: its own transaction); the casts type empty arrays.
PUT_CALL: Final = f"""
SELECT conflict, current_version, versions FROM {PUT_FUNCTION}(
    %s::int8[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::float8[], %s::int8[],
    %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int4[], %s::text[], %s::text[], %s::int4[],
    %s, %s, %s, %s)
"""

#: Serializes catalog changes between processes opening one store at once (as ``_schema``'s).
_CREATE_LOCK: Final = 0x46_4D_53_43  # "FMSC"


def ensure_put_function(conn: psycopg.Connection[Any]) -> bool:
    """Create ``filemem_put_v1`` in the store's schema if missing; True if it did. ``conn`` is autocommit."""
    if _exists(conn):
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
        if _exists(conn):
            return False
        conn.execute(_DDL)
    return True


def _exists(conn: psycopg.Connection[Any]) -> bool:
    # to_regproc resolves through search_path: the store's schema first.
    row = conn.execute(
        "SELECT count(*) FROM pg_proc WHERE proname = %s AND pronamespace = current_schema()::regnamespace",
        (PUT_FUNCTION,),
    ).fetchone()
    return bool(row and row[0])
