"""pgvector's cosine order, read in batches, and the exact vector rank of chosen records (issue 16).

Invariant: every score this module hands out is the exact cosine
(``_search._scoring.cosine`` of the float32 vector), never pgvector's; the
server's float4 distance only orders and bounds. pgvector's similarity
``1 - dist`` of a row is within ``cosine_margin`` of its exact score while
every norm is inside ``SAFE_NORMS`` (checked over all candidates on the
first row; outside, no bound is ever given and the ranking is read whole).
So:

* ``next_batch`` returns the candidates read so far in server order, exactly
  scored, with T = the last row's similarity + the margin: no candidate not
  yet read scores above T (its distance is at least the last row's).
* ``ranks`` returns a record's exact 1-based place in the complete ranking
  (descending exact score, ties in (namespace, key) order): the candidates
  whose server distance is below ``1 - s - 2 margin`` score above the
  record's exact ``s`` and are counted by the server's order alone (the rows
  come back without vectors); those within ``2 margin`` of it come back with
  their vectors and are compared exactly; the rest score below it.

A candidate is what the file store's vector ranking holds: a live record
under the prefix, passing the SQL narrowing and the filter's predicate, with
a vector of its current version and a non-zero norm.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any, Final

import psycopg

from ..._errors import InvalidQueryError, InvalidValueError
from ..._search._filter import Predicate
from ..._search._scoring import cosine, norm
from ._fusion import Hit
from ._names import encode_ns
from ._pgvector import VectorSupport, cosine_margin

__all__ = ["COLS", "LIVE_R", "SAFE_NORMS", "PgvectorOrder", "candidates_sql"]

COLS: Final = "r.ns, r.key, r.value, r.version, r.created_at, r.updated_at, r.expires_at"
#: Norms outside this range may under- or overflow pgvector's float4 sums: read every row then.
SAFE_NORMS: Final = (1e-15, 1e15)
#: Live at the search's transaction start: every statement of one search sees the same records (a record
#: expiring between the stream and a ``ranks`` query would otherwise be counted by one and not the other).
LIVE_R: Final = "(r.expires_at IS NULL OR r.expires_at > extract(epoch from transaction_timestamp())::float8)"
#: Rows per FETCH: the first batch, and the most (each batch doubles).
_FIRST: Final = 64
_MOST: Final = 512

#: ``Ranker._hit``: (namespace, key, rest) of a candidate row, or None (internal, undecodable, filtered out).
HitFn = Callable[[tuple[Any, ...], Predicate | None], tuple[tuple[str, ...], str, tuple[Any, ...]] | None]


def candidates_sql(
    vectors: VectorSupport,
    conn: psycopg.Connection[Any],
    scope: tuple[str, list[Any]],
    where: tuple[str, list[Any]],
    cfg: str,
    q: list[float],
) -> tuple[str, list[Any]]:
    """The rows that may be candidates: ``COLS``, ``pv`` (the vector), ``dims``, ``norm`` (NULL for 0), ``dist``.

    ``dist`` is pgvector's cosine distance, NULL for a vector of another
    dimension (the caller raises), NaN for a zero vector.
    """
    vtype, cos_op, ext = vectors.names(conn)
    dims_fn = f"{ext}.vector_dims"
    pv = f"coalesce(v.pvec, v.vec::{vtype})"
    sql = (
        f"SELECT {COLS}, {pv} AS pv, {dims_fn}({pv}) AS dims,"
        f" nullif({ext}.vector_norm({pv}), 0) AS norm,"
        f" CASE WHEN {dims_fn}({pv}) = %s THEN {pv} {cos_op} (SELECT %s::float8[]::{vtype}) END AS dist"
        " FROM filemem_records r JOIN filemem_vectors v ON v.cfg = %s AND v.ns = r.ns AND v.key = r.key"
        f" WHERE {LIVE_R} AND v.version = r.version AND {pv} IS NOT NULL AND {scope[0]} AND {where[0]}"
    )
    return sql, [len(q), q, cfg, *scope[1], *where[1]]


def check_first(q: list[float], qn: float, row: Sequence[Any]) -> bool:
    """Raise on mixed or wrong dimensions (``row``: dims and norms over every candidate); True: the margin holds."""
    lo_dim, hi_dim, lo_norm, hi_norm = row
    if lo_dim != hi_dim:
        raise InvalidValueError(f"embed returned vectors of {lo_dim} and {hi_dim} dimensions")
    if lo_dim != len(q):
        raise InvalidQueryError(f"vector has {len(q)} dimensions; the index holds {lo_dim}")
    if lo_norm is None or not (SAFE_NORMS[0] <= lo_norm and hi_norm <= SAFE_NORMS[1]):
        return False
    return SAFE_NORMS[0] <= qn <= SAFE_NORMS[1]


class PgvectorOrder:
    """One search's vector ranking on pgvector, as ``_fusion.VectorOrder`` (inside the search's transaction)."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        candidates: tuple[str, list[Any]],
        q: list[float],
        pred: Predicate | None,
        hit: HitFn,
        counters: dict[str, int],
    ) -> None:
        self._conn = conn
        self._cands = candidates
        self._q = q
        self._qn = norm(q)
        self._pred = pred
        self._hit = hit
        self._counters = counters
        self._margin = cosine_margin(len(q))
        self._bounded = True
        self._size = _FIRST
        inner, params = candidates
        self._cur = conn.cursor(name="filemem_vec_order")
        self._cur.execute(
            f"SELECT {COLS.replace('r.', 'x.')}, x.pv::real[]::float8[], x.dist,"
            " min(x.dims) OVER (), max(x.dims) OVER (), min(x.norm) OVER (), max(x.norm) OVER ()"
            f" FROM ({inner}) x ORDER BY x.dist",
            params,
        )
        self._first = True
        self._done = False

    def close(self) -> None:
        self._cur.close()

    def next_batch(self) -> tuple[list[Hit], float | None] | None:
        if self._done:
            return None
        size = self._size
        self._size = min(_MOST, 2 * size)
        rows = self._cur.fetchmany(size)
        if len(rows) < size:
            self._done = True  # a short batch: the cursor is exhausted (the next call returns None)
        if not rows:
            return None
        if self._first:
            self._bounded = check_first(self._q, self._qn, rows[0][9:13])
            self._first = False
        out: list[Hit] = []
        for row in rows:
            self._counters["vector_rows_read"] += 1
            got = self._hit(row[:7], self._pred)
            if got is None:
                continue
            vec = row[7]
            vn = norm(vec)
            if vn:
                out.append((got[0], got[1], cosine(self._q, self._qn, vec, vn), got[2]))
        dist = rows[-1][8]
        bound = None
        if self._bounded and dist is not None and not math.isnan(dist):
            bound = (1.0 - dist) + self._margin
        return out, bound

    def ranks(self, targets: Sequence[Hit]) -> dict[tuple[tuple[str, ...], str], int | None]:
        out: dict[tuple[tuple[str, ...], str], int | None] = {(t[0], t[1]): None for t in targets}
        # The targets' own exact scores (their vectors of the current version; none: not ranked).
        inner, params = self._cands
        got = self._conn.execute(
            f"SELECT x.ns, x.key, x.pv::real[]::float8[] FROM ({inner}) x"
            " WHERE (x.ns, x.key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            (*params, [encode_ns(t[0]) for t in targets], [t[1] for t in targets]),
        ).fetchall()
        keyed = {(encode_ns(t[0]), t[1]): (t[0], t[1]) for t in targets}
        score: dict[tuple[tuple[str, ...], str], float] = {}
        for ns_text, key, vec in got:
            self._counters["vector_rows_read"] += 1
            vn = norm(vec)
            if vn:
                score[keyed[(ns_text, key)]] = cosine(self._q, self._qn, vec, vn)
        if not score:
            return out
        gap = 2.0 * self._margin
        order = list(score.items())
        los = [(1.0 - s) - gap for _, s in order]
        his = [(1.0 - s) + gap for _, s in order]
        # Every candidate up to the widest band: ns/key (the value only for the filter), the vector in a band.
        value = "x.value" if self._pred is not None else "NULL::bytea"
        rows = self._conn.execute(
            # The bands once (a CTE), not one unnest of the arrays per row.
            "WITH b AS MATERIALIZED (SELECT * FROM unnest(%s::float8[], %s::float8[]) AS b(lo, hi))"
            f" SELECT x.ns, x.key, {value}, x.version, x.created_at, x.updated_at, x.expires_at, x.dist,"
            " CASE WHEN EXISTS (SELECT 1 FROM b WHERE x.dist >= b.lo AND x.dist <= b.hi)"
            " THEN x.pv::real[]::float8[] END"
            # OFFSET 0: a fence, so each row's distance is computed once, not again per band in EXISTS.
            f" FROM ({inner} OFFSET 0) x WHERE x.dist <= %s",
            (los, his, *params, max(his)),
        ).fetchall()
        dists: list[float] = []
        band: list[tuple[float, float, tuple[str, ...], str]] = []
        for row in rows:
            hit = self._hit(row[:7], self._pred)
            if hit is None:
                continue
            dists.append(row[7])
            if row[8] is not None:
                self._counters["vector_rows_read"] += 1
                vn = norm(row[8])
                if vn:
                    band.append((row[7], cosine(self._q, self._qn, row[8], vn), hit[0], hit[1]))
        dists.sort()
        band.sort()
        band_dists = [b[0] for b in band]
        for ((ns, key), s), lo, hi in zip(order, los, his, strict=True):
            ahead = bisect.bisect_left(dists, lo)  # distance below lo: scores above s, surely
            for _, other, ons, okey in band[bisect.bisect_left(band_dists, lo) : bisect.bisect_right(band_dists, hi)]:
                if (-other, ons, okey) < (-s, ns, key):
                    ahead += 1
            out[(ns, key)] = ahead + 1
        return out
