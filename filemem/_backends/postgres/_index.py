"""The keyword index on PostgreSQL: postings kept in the write's own transaction (issue 16).

Invariant: for every live or expired record of a user namespace, the
``filemem_postings`` rows ``(term, ns, key, tf)`` and its ``filemem_doclens``
row are exactly what the file store's segment holds for that record
(``filemem._search._text``: every string of the value, case-folded ``\\w+``
terms), because they are rewritten by the same transaction that writes the
record (``index_writes``, called by the Writer) and deleted with it (a
delete, the TTL sweeper). A reader therefore never sees postings of a
version that is not the record's current one. Internal namespaces (collector
markers, ...) are never indexed.

Vectors (``filemem_vectors``) are derived lazily, as the file store's
segments are: per index configuration (``cfg``: the index fields and the
embedder's id), stamped with the record version they describe; a vector of
another version is never used (``_rank`` re-embeds it).

Tables (created if missing when a store is opened read-write; an existing
store gets them, and its postings, on the first read-write open with this
version: ``ensure_index``)::

    filemem_postings  (term, ns, key) PK, tf int         one row per term of a record
    filemem_doclens   (ns, key) PK, len int              terms in the record (rows with len > 0 only)
    filemem_vectors   (cfg, ns, key) PK, version, vec real[] (NULL: the record has no text),
                      pvec vector (added on servers with pgvector: ``_pgvector``; vec is NULL then)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

import psycopg

from ..._search._text import record_text, tokenize
from ..._types import Finding
from ...codecs import Codec
from ._names import INTERNAL_TEXT
from ._writes import NOW_SQL

__all__ = [
    "INDEX_DDL",
    "INDEX_LOCK",
    "IndexRows",
    "ensure_index",
    "index_findings",
    "index_rows",
    "index_terms",
    "index_writes",
    "orphans",
]

INDEX_DDL: Final = """
CREATE TABLE IF NOT EXISTS filemem_postings (
    term text COLLATE "C" NOT NULL,
    ns text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    tf integer NOT NULL,
    PRIMARY KEY (term, ns, key)
);
CREATE INDEX IF NOT EXISTS filemem_postings_doc ON filemem_postings (ns, key);
CREATE TABLE IF NOT EXISTS filemem_doclens (
    ns text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    len integer NOT NULL,
    PRIMARY KEY (ns, key)
);
CREATE TABLE IF NOT EXISTS filemem_vectors (
    cfg text COLLATE "C" NOT NULL,
    ns text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    vec real[],
    PRIMARY KEY (cfg, ns, key)
);
CREATE INDEX IF NOT EXISTS filemem_vectors_doc ON filemem_vectors (ns, key);
"""

#: Serializes creating the index tables (and back-filling them) between processes.
INDEX_LOCK: Final = 0x46_4D_49_58  # "FMIX"
_BACKFILL_ROWS: Final = 500

_DROP_DOCS: Final = """
WITH g AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS g(ns, key)),
     p AS (DELETE FROM filemem_postings t USING g WHERE t.ns = g.ns AND t.key = g.key),
     v AS (DELETE FROM filemem_vectors t USING g WHERE t.ns = g.ns AND t.key = g.key)
DELETE FROM filemem_doclens t USING g WHERE t.ns = g.ns AND t.key = g.key
"""
_ADD_POSTINGS: Final = (
    "INSERT INTO filemem_postings (term, ns, key, tf)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int4[])"
)
_ADD_LENS: Final = "INSERT INTO filemem_doclens (ns, key, len) SELECT * FROM unnest(%s::text[], %s::text[], %s::int4[])"


def index_terms(value: Any) -> Counter[str]:
    """Term counts of a value, exactly as the file store's segment counts them (every string field)."""
    terms: list[str] = []
    for text in record_text(value, None):
        terms.extend(tokenize(text))
    return Counter(terms)


#: ``index_rows``' result: (drop ns, drop keys), postings (term, ns, key, tf) and lengths (ns, key, len), as columns.
IndexRows = tuple[
    tuple[list[str], list[str]],
    tuple[list[str], list[str], list[str], list[int]],
    tuple[list[str], list[str], list[int]],
]


def index_rows(gone: Iterable[tuple[str, str]], written: Iterable[tuple[str, str, Any]]) -> IndexRows:
    """The index rows of a write, as columns: which records' rows to drop, the postings and lengths to add.

    ``gone``: (ns, key) deleted; ``written``: (ns, key, value) put or updated.
    Internal namespaces are left out. The one place the rows are derived:
    ``index_writes`` and the one-call put (``_put_fn``) both send these.
    """
    drop: tuple[list[str], list[str]] = ([], [])
    cols: tuple[list[str], list[str], list[str], list[int]] = ([], [], [], [])
    lens: tuple[list[str], list[str], list[int]] = ([], [], [])
    for ns, key in gone:
        if not ns.startswith(INTERNAL_TEXT):
            drop[0].append(ns)
            drop[1].append(key)
    for ns, key, value in written:
        if ns.startswith(INTERNAL_TEXT):
            continue
        drop[0].append(ns)
        drop[1].append(key)
        counts = index_terms(value)
        for term, tf in counts.items():
            cols[0].append(term)
            cols[1].append(ns)
            cols[2].append(key)
            cols[3].append(tf)
        total = sum(counts.values())
        if total:
            lens[0].append(ns)
            lens[1].append(key)
            lens[2].append(total)
    return drop, cols, lens


def index_writes(
    conn: psycopg.Connection[Any], gone: Iterable[tuple[str, str]], written: Iterable[tuple[str, str, Any]]
) -> None:
    """Inside a write transaction: drop the index rows of every touched record, add those of the written ones.

    ``gone``: (ns, key) deleted; ``written``: (ns, key, value) put or updated.
    """
    drop, cols, lens = index_rows(gone, written)
    if not drop[0]:
        return
    conn.execute(_DROP_DOCS, drop)
    if cols[0]:
        conn.execute(_ADD_POSTINGS, cols)
    if lens[0]:
        conn.execute(_ADD_LENS, lens)


def ensure_index(conn: psycopg.Connection[Any], codec: Codec) -> bool:
    """Create the index tables if missing and index the records already there; True if it did.

    ``conn`` is in autocommit mode. Runs in one transaction under an advisory
    lock, so two processes opening an old store at once build it once, and a
    crash mid-way leaves no half-built index (the next open builds it again).
    Writers of this version index their own writes once the tables exist.
    """
    exists = conn.execute("SELECT to_regclass('filemem_postings') IS NOT NULL").fetchone()
    if exists and exists[0]:
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_LOCK,))
        again = conn.execute("SELECT to_regclass('filemem_postings') IS NOT NULL").fetchone()
        if again and again[0]:
            return False
        conn.execute(INDEX_DDL)
        # Records written by older versions (no postings yet), a page at a time.
        last = ("", "")
        while True:
            rows = conn.execute(
                "SELECT ns, key, value FROM filemem_records WHERE (ns, key) > (%s, %s) ORDER BY ns, key LIMIT %s",
                (*last, _BACKFILL_ROWS),
            ).fetchall()
            if not rows:
                break
            index_writes(conn, (), [(ns, key, codec.decode(bytes(raw))) for ns, key, raw in rows])
            last = (rows[-1][0], rows[-1][1])
    return True


def orphans(conn: psycopg.Connection[Any], *, fix: bool) -> dict[str, int]:
    """Index rows naming no record (``check()``); deleted when ``fix``. Missing index rows are not orphans."""
    counts: dict[str, int] = {}
    for table in ("filemem_postings", "filemem_doclens", "filemem_vectors"):
        cond = "NOT EXISTS (SELECT 1 FROM filemem_records r WHERE r.ns = t.ns AND r.key = t.key)"
        if fix:
            counts[table] = conn.execute(f"DELETE FROM {table} t WHERE {cond}").rowcount
        else:
            row = conn.execute(f"SELECT count(*) FROM {table} t WHERE {cond}").fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


def index_findings(conn: psycopg.Connection[Any], location: str, *, fix: bool) -> list[Finding]:
    """``check()``'s findings: index rows naming no record (never served: searches join the records)."""
    with conn.transaction():
        found = orphans(conn, fix=False)
        if fix and any(found.values()):
            orphans(conn, fix=True)
    return [
        Finding(
            "orphaned-postings",
            f"{location} {table}",
            f"{n} index rows name records that do not exist (never served: searches join the records)",
            severity="warning",
            fixed=fix,
            action="deleted" if fix else "",
            details={"table": table, "rows": n},
        )
        for table, n in found.items()
        if n
    ]


#: Deletes up to %s expired records and their index rows in one statement (the sweeper's).
SWEEP_SQL: Final = f"""
WITH d AS (DELETE FROM filemem_records WHERE ctid IN (SELECT ctid FROM filemem_records
           WHERE expires_at <= {NOW_SQL} LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING ns, key),
     p AS (DELETE FROM filemem_postings t USING d WHERE t.ns = d.ns AND t.key = d.key),
     v AS (DELETE FROM filemem_vectors t USING d WHERE t.ns = d.ns AND t.key = d.key),
     l AS (DELETE FROM filemem_doclens t USING d WHERE t.ns = d.ns AND t.key = d.key)
SELECT count(*) FROM d
"""
