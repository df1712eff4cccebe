"""pgvector on the server when it has it: detection, the ``vector`` column, the error bound of its cosine (issue 16).

Invariant: a store uses pgvector only when the ``vector`` extension is
installed in its database (or this open could install it: the role may
``CREATE EXTENSION``); otherwise vectors stay ``real[]`` and are ranked in
Python, as before. Either way the scores are the file store's, bit for bit:
pgvector's ``<=>`` only orders the rows and lets a search stop reading early
(``cosine_margin`` bounds how far its float4 arithmetic can be from the exact
cosine), the score of every row read is computed here as the file store does.

The extension lives in one schema of the database (``public`` when this
module creates it, wherever the DBA put it otherwise), never in a store's own
schema: dropping a store's schema must not drop the type under other stores'
columns. Every reference to its type, functions and operator is qualified
with that schema, so a store's ``search_path`` need not include it.

Vectors live in ``filemem_vectors.pvec`` (``vector``, any dimension) beside
the ``vec real[]`` column; a pgvector store writes ``pvec`` only and reads
``coalesce(pvec, vec::vector)``, so vectors written before the extension
appeared keep serving. pgvector is never required: a server without it, or a
role that may not create it, works exactly as before (``stats()["vectors"]``
says which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

__all__ = ["VectorSupport", "cosine_margin", "detect", "ensure_column"]

#: float32's unit roundoff (pgvector accumulates in float4).
_U32: Final = 2.0**-24
#: The extension's name, and the schema this module creates it in.
_EXT: Final = "vector"
_CREATE_IN: Final = "public"


@dataclass(frozen=True)
class VectorSupport:
    """How this store keeps vectors: ``schema`` of the pgvector extension, or None for ``real[]``."""

    schema: str | None
    version: str | None
    why: str

    def label(self) -> str:
        """``stats()["vectors"]``: ``"pgvector 0.6.2"`` or ``"real[] (<why>)"``."""
        return f"pgvector {self.version}" if self.schema is not None else f"real[] ({self.why})"

    def names(self, conn: psycopg.Connection[Any]) -> tuple[str, str, str]:
        """The qualified type, the cosine distance operator and the extension's schema, as SQL text."""
        assert self.schema is not None
        s = sql.Identifier(self.schema).as_string(conn)
        return f"{s}.vector", f"OPERATOR({s}.<=>)", s


def _installed(conn: psycopg.Connection[Any]) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = %s",
        (_EXT,),
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def detect(conn: psycopg.Connection[Any], *, may_create: bool, lock: int) -> VectorSupport:
    """Find pgvector; with ``may_create``, try ``CREATE EXTENSION`` once (under the advisory ``lock``).

    ``conn`` is in autocommit mode. A refusal (the extension is not
    available, or the role may not create it: pgvector is not a trusted
    extension, so that takes a superuser) is not an error: the store keeps
    ``real[]`` and says why.
    """
    got = _installed(conn)
    if got is not None:
        return VectorSupport(got[0], got[1], "installed")
    avail = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = %s", (_EXT,)).fetchone()
    if avail is None:
        return VectorSupport(None, None, "the server has no pgvector")
    if not may_create:
        return VectorSupport(None, None, "pgvector is available but not installed in this database")
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            if _installed(conn) is None:
                conn.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS vector SCHEMA {}").format(sql.Identifier(_CREATE_IN))
                )
    except psycopg.Error as exc:
        primary = exc.diag.message_primary if exc.diag else None
        return VectorSupport(None, None, f"CREATE EXTENSION vector was refused: {primary or exc}")
    got = _installed(conn)
    if got is None:  # pragma: no cover - created above, unless dropped at once
        return VectorSupport(None, None, "pgvector vanished after CREATE EXTENSION")
    return VectorSupport(got[0], got[1], "created")


def ensure_column(conn: psycopg.Connection[Any], support: VectorSupport, *, lock: int) -> None:
    """Add ``filemem_vectors.pvec`` if missing (autocommit ``conn``; once, under the advisory ``lock``)."""
    vtype = support.names(conn)[0]
    has = "SELECT 1 FROM pg_attribute WHERE attrelid = 'filemem_vectors'::regclass AND attname = 'pvec'"
    if conn.execute(has + " AND NOT attisdropped").fetchone():
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        if not conn.execute(has + " AND NOT attisdropped").fetchone():
            conn.execute(f"ALTER TABLE filemem_vectors ADD COLUMN pvec {vtype}")


def cosine_margin(dim: int) -> float:
    """How far pgvector's cosine similarity can be from the exact one, for ``dim``-dimensional vectors.

    pgvector (0.5 to 0.7) sums ``a*b``, ``a*a`` and ``b*b`` in float4 and
    divides in float8. Each float4 sum of n products is within
    gamma_n = n*u/(1 - n*u) (u = 2**-24) of the exact sum of magnitudes, which
    for the dot product is at most |a||b| (Cauchy-Schwarz), so the similarity
    moves by at most about 2*gamma_n; the query rounded to float4 moves it by
    at most 2*u more. Three gamma_n plus 4*u (and 1e-12 for the float8
    steps) is a safe margin while no product under- or overflows float4
    (``_rank`` reads every row when a norm is outside 1e-15..1e15).
    """
    n = dim + 1
    gamma = n * _U32 / (1.0 - n * _U32) if n * _U32 < 0.5 else 1.0
    return 3.0 * gamma + 4.0 * _U32 + 1e-12
