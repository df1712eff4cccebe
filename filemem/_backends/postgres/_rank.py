"""Keyword (BM25) and vector ranking on PostgreSQL, scored as the file store scores (issue 16).

Invariant: for the same records, query, filter, prefix, limit and offset a
search returns the same keys in the same order with the same scores as the
file store's ``filemem._search._scoring.rank``:

* BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - df + 0.5)/(df + 0.5)) per
  unique query term, N, df and the average length over every live record
  under the prefix, before the filter). N, df and the average length are
  counted by the server and the idf computed here, in Python; the server
  then evaluates each posting's term with the same IEEE operations in the
  same order, summed in query-term order (``sum(... ORDER BY ord)``), so the
  scores are bit for bit the file store's.
* The filter narrows in SQL (a superset, ``_search._narrowing``) and the file
  store's predicate decides on the decoded value.
* Vectors: exact cosine (float32 vectors, as the file store's segments
  hold them), computed here with the same ``fsum``; vectors are embedded
  lazily for records that have none of their current version, as a file
  store's segment build does. Without pgvector every vector under the
  prefix is read and scored here. With pgvector (``_pgvector``) the server
  orders the rows by ``<=>`` and the stream stops once the page is held and
  the server's similarity, plus ``cosine_margin`` (its float4 error), is
  below the page's last exact score: no row left unread could reach the page.
* Both: reciprocal rank fusion (k = 60), as of the two complete rankings
  (``_fusion``). With pgvector the vector ranking is read in the server's
  order only until no record left unread, or unranked, could enter the
  page (``_fusion.fuse_top``; ``_vector_order`` asks the server for the
  exact vector rank of the few BM25 hits that still could); without it,
  or when the page needs it, both rankings are read whole and fused.
* Ties in (namespace, key) order as tuples, which the "C" order of the
  escaped ``ns`` text does not give, so the page is cut here: rows stream
  in score order and stop once ``offset + limit`` hits are held and the
  score dropped below the last one's.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import math
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

import psycopg

from ..._errors import InvalidQueryError, InvalidValueError
from ..._search import Embed, SearchHit
from ..._search._filter import Predicate
from ..._search._scoring import K1, B, cosine, norm, query_vector
from ..._search._text import record_text, tokenize
from ..._shard import Record
from ..._snapshot import item_of
from ...codecs import Codec
from ._fusion import FusionStats, fuse_all, fuse_top
from ._names import INTERNAL_TEXT, decode_ns, prefix_range
from ._pgvector import VectorSupport, cosine_margin
from ._vector_order import COLS, LIVE_R, PgvectorOrder, candidates_sql, check_first
from ._writes import record_of

__all__ = ["Ranker"]

_LIVE_R: Final = LIVE_R
_NOT_INTERNAL: Final = "NOT (r.ns >= %s AND r.ns < %s)"
#: Rows fetched per round trip while streaming a ranking.
_ITERSIZE: Final = 500
_COLS: Final = COLS

#: Namespaces decoded once per process, not once per row (a search reads thousands of rows of few namespaces).
_decode_ns: Final = functools.lru_cache(maxsize=4096)(decode_ns)

#: (namespace, key, score, raw row) as this module passes hits around.
_Hit = tuple[tuple[str, ...], str, float, tuple[Any, ...]]


class Ranker:
    """Ranked search over one store's tables (the backend's ``search`` delegates here for query/vector)."""

    def __init__(
        self,
        conn: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
        codec: Codec,
        *,
        index_fields: tuple[tuple[str, ...], ...] | None,
        embed: Embed | None,
        embed_id: str | None,
        readonly: bool,
    ) -> None:
        self._conn = conn
        self.codec = codec
        self.fields = index_fields
        self.embed = embed
        self.embed_id = embed_id
        self.readonly = readonly
        spec = {"v": 1, "fields": [list(f) for f in index_fields] if index_fields else None, "embed": embed_id}
        #: Names this configuration's vectors (fields and embedder), as the file store's index config does.
        self.cfg = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        self.counters = {
            "ranked_searches": 0,
            "vectors_embedded": 0,
            "vector_rows_read": 0,
            # Hybrid searches on pgvector: vector ranks asked of the server, rankings read to the end.
            "vector_ranks_asked": 0,
            "hybrid_whole_reads": 0,
        }
        #: pgvector on the server, or None (``real[]``); the backend sets it after opening.
        self.vectors = VectorSupport(None, None, "not detected")

    # ------------------------------------------------------------------ entry

    def query_vector(self, vector: Sequence[float] | str | None) -> list[float] | None:
        """The query vector as floats (the file store's rules: ``_search._scoring.query_vector``)."""
        return query_vector(self.embed, vector)

    def rank(
        self,
        prefix: tuple[str, ...],
        terms: list[str] | None,
        qvec: list[float] | None,
        pred: Predicate | None,
        where: tuple[str, list[Any]],
        limit: int,
        offset: int,
    ) -> list[SearchHit]:
        """The page of the ranking (``terms``: unique query terms; ``where``: SQL narrowing on ``doc``)."""
        self.counters["ranked_searches"] += 1
        want = offset + limit
        with self._conn() as conn, conn.transaction():
            # One REPEATABLE READ snapshot: the statistics and the postings agree.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            bm25: list[_Hit] | None = None
            if terms is not None:
                if self.fields is not None:
                    bm25 = self._bm25_scan(conn, prefix, terms, pred, where)
                else:
                    bm25 = self._bm25(conn, prefix, terms, pred, where, None if qvec is not None else want)
            cos = None
            fused: list[_Hit] | None = None
            if bm25 is not None and qvec is not None and self.vectors.schema is not None and not self.readonly:
                fused = self._fuse_pgvector(conn, prefix, bm25, qvec, pred, where, want)
            elif qvec is not None:
                cos = self._cosine(conn, prefix, qvec, pred, where, want if terms is None else None)
        if fused is not None:
            hits = fused
        elif bm25 is not None and cos is not None:
            hits = fuse_all(bm25, cos)
        else:
            got_hits = bm25 if bm25 is not None else cos
            assert got_hits is not None
            hits = got_hits
        hits.sort(key=lambda h: (-h[2], h[0], h[1]))
        return [SearchHit(item_of(ns, key, self._record(row)), score) for ns, key, score, row in hits[offset:want]]

    # ------------------------------------------------------------------ BM25

    def _scope(self, prefix: tuple[str, ...], col: str) -> tuple[str, list[Any]]:
        rng = prefix_range(prefix)
        if rng is None:
            return "TRUE", []
        return f"({col} = %s OR ({col} >= %s AND {col} < %s))", list(rng)

    def _stats(
        self, conn: psycopg.Connection[Any], prefix: tuple[str, ...], terms: list[str]
    ) -> tuple[int, int, dict[str, int]]:
        """N (live records under the prefix), their total length, and df per term (live records only)."""
        scope, sargs = self._scope(prefix, "r.ns")
        internal = [INTERNAL_TEXT, INTERNAL_TEXT + "\uffff"]
        row = conn.execute(
            f"SELECT count(*), coalesce(sum(d.len), 0) FROM filemem_records r"
            f" LEFT JOIN filemem_doclens d ON d.ns = r.ns AND d.key = r.key"
            f" WHERE {_LIVE_R} AND {scope} AND {_NOT_INTERNAL}",
            (*sargs, *internal),
        ).fetchone()
        assert row is not None
        df: dict[str, int] = dict.fromkeys(terms, 0)
        for term, count in conn.execute(
            f"SELECT p.term, count(*) FROM filemem_postings p JOIN filemem_records r ON r.ns = p.ns AND r.key = p.key"
            f" WHERE p.term = ANY(%s) AND {_LIVE_R} AND {scope} GROUP BY p.term",
            (terms, *sargs),
        ):
            df[term] = int(count)
        return int(row[0]), int(row[1]), df

    def _bm25(
        self,
        conn: psycopg.Connection[Any],
        prefix: tuple[str, ...],
        terms: list[str],
        pred: Predicate | None,
        where: tuple[str, list[Any]],
        want: int | None,
    ) -> list[_Hit]:
        """BM25 hits from the postings; with ``want``, only enough for the page (and every tie of its last)."""
        n_docs, total_len, df = self._stats(conn, prefix, terms)
        if not n_docs or not total_len:
            return []
        avgdl = total_len / n_docs
        used = [t for t in terms if df[t]]
        if not used:
            return []
        idfs = [math.log(1.0 + (n_docs - df[t] + 0.5) / (df[t] + 0.5)) for t in used]
        scope, sargs = self._scope(prefix, "p.ns")
        narrow, nargs = where
        # The file store's expression, operation by operation:
        # idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len / avgdl)).
        sql = (
            f"SELECT {_COLS}, s.score FROM ("
            " SELECT p.ns, p.key, sum(((q.idf * p.tf::float8) * %s::float8)"
            "  / (p.tf::float8 + %s::float8 * ((%s::float8 + (%s::float8 * d.len::float8) / %s::float8)))"
            "  ORDER BY q.ord) AS score"
            " FROM unnest(%s::text[], %s::float8[]) WITH ORDINALITY AS q(term, idf, ord)"
            " JOIN filemem_postings p ON p.term = q.term"
            " JOIN filemem_doclens d ON d.ns = p.ns AND d.key = p.key"
            f" WHERE {scope} GROUP BY p.ns, p.key) s"
            " JOIN filemem_records r ON r.ns = s.ns AND r.key = s.key"
            f" WHERE {_LIVE_R} AND {narrow}"
            " ORDER BY s.score DESC"
        )
        params = (K1 + 1, K1, 1 - B, B, avgdl, used, idfs, *sargs, *nargs)
        return self._collect(conn, sql, params, pred, want)

    def _collect(
        self,
        conn: psycopg.Connection[Any],
        sql: str,
        params: tuple[Any, ...],
        pred: Predicate | None,
        want: int | None,
    ) -> list[_Hit]:
        hits: list[_Hit] = []
        floor: float | None = None
        with conn.cursor(name="filemem_rank") as cur:
            cur.itersize = _ITERSIZE
            cur.execute(sql, params)
            for row in cur:
                score = float(row[-1])
                if floor is not None and score < floor:
                    break  # every later row scores lower still: the page and its ties are held
                got = self._hit(row[:-1], pred)
                if got is None:
                    continue
                hits.append((got[0], got[1], score, got[2]))
                if want is not None and floor is None and len(hits) >= want:
                    floor = score
        return hits

    def _hit(self, row: tuple[Any, ...], pred: Predicate | None) -> tuple[tuple[str, ...], str, tuple[Any, ...]] | None:
        ns_text, key = row[0], row[1]
        if ns_text.startswith(INTERNAL_TEXT):
            return None
        ns = _decode_ns(ns_text)
        if ns is None:
            return None
        rest: tuple[Any, ...] = tuple(row[2:7])
        if pred is not None:
            rec = self._record(rest)
            if not pred(rec["value"]):
                return None
            rest = (rec, *rest[1:])
        return ns, key, rest

    def _record(self, rest: tuple[Any, ...]) -> Record:
        if isinstance(rest[0], dict):  # decoded already, for the filter
            rec: Record = rest[0]
            return rec
        return record_of(rest, self.codec)

    def _rows(
        self,
        conn: psycopg.Connection[Any],
        prefix: tuple[str, ...],
        where: tuple[str, list[Any]],
        extra_cols: str = "",
        join: str = "",
        jargs: tuple[Any, ...] = (),
    ) -> Iterator[tuple[Any, ...]]:
        scope, sargs = self._scope(prefix, "r.ns")
        narrow, nargs = where
        sql = f"SELECT {_COLS}{extra_cols} FROM filemem_records r {join} WHERE {_LIVE_R} AND {scope} AND {narrow}"
        with conn.cursor(name="filemem_scan") as cur:
            cur.itersize = _ITERSIZE
            cur.execute(sql, (*jargs, *sargs, *nargs))
            yield from cur

    def _bm25_scan(
        self,
        conn: psycopg.Connection[Any],
        prefix: tuple[str, ...],
        terms: list[str],
        pred: Predicate | None,
        where: tuple[str, list[Any]],
    ) -> list[_Hit]:
        """BM25 over ``index_fields`` (the postings index every string): tokenizes each record under the prefix."""
        docs: list[tuple[tuple[str, ...], str, dict[str, int], int, tuple[Any, ...] | None]] = []
        n_docs = 0
        total_len = 0
        df = dict.fromkeys(terms, 0)
        wanted = set(terms)
        for row in self._rows(conn, prefix, ("TRUE", [])):
            if row[0].startswith(INTERNAL_TEXT) or _decode_ns(row[0]) is None:
                continue
            rec = record_of(tuple(row[2:7]), self.codec)
            counts: dict[str, int] = {}
            length = 0
            for text in record_text(rec["value"], self.fields):
                for t in tokenize(text):
                    length += 1
                    if t in wanted:
                        counts[t] = counts.get(t, 0) + 1
            n_docs += 1
            total_len += length
            for t in counts:
                df[t] += 1
            if counts:
                ok = pred is None or pred(rec["value"])
                docs.append((_decode_ns(row[0]) or (), row[1], counts, length, (rec, *row[3:7]) if ok else None))
        if not n_docs or not total_len:
            return []
        avgdl = total_len / n_docs
        hits: list[_Hit] = []
        for ns, key, counts, length, rest in docs:
            if rest is None:
                continue
            score: float | None = None
            for t in terms:
                tf = counts.get(t)
                if not tf:
                    continue
                idf = math.log(1.0 + (n_docs - df[t] + 0.5) / (df[t] + 0.5))
                s = idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / avgdl))
                score = s if score is None else score + s
            if score is not None:
                hits.append((ns, key, score, rest))
        return hits

    # ------------------------------------------------------------------ vectors

    def fill_vectors(self, prefix: tuple[str, ...]) -> None:
        """Embed the live records under ``prefix`` that have no vector of their current version.

        Outside any transaction (embedding may be slow); each vector is stored
        with the version it describes, so one written meanwhile is simply
        not used. A read-only store embeds in memory at every search instead.
        """
        if self.embed is None or self.readonly:
            return
        scope, sargs = self._scope(prefix, "r.ns")
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT r.ns, r.key, r.version, r.value FROM filemem_records r"
                " LEFT JOIN filemem_vectors v ON v.cfg = %s AND v.ns = r.ns AND v.key = r.key"
                f" WHERE {_LIVE_R} AND {scope} AND {_NOT_INTERNAL} AND (v.version IS DISTINCT FROM r.version)",
                (self.cfg, *sargs, INTERNAL_TEXT, INTERNAL_TEXT + "\uffff"),
            ).fetchall()
        if not rows:
            return
        out: tuple[list[str], list[str], list[int], list[list[float] | None]] = ([], [], [], [])
        for ns, key, version, raw in rows:
            vec = self._embed_value(self.codec.decode(bytes(raw)))
            out[0].append(ns)
            out[1].append(key)
            out[2].append(version)
            out[3].append(None if vec is None else list(vec))
        self.counters["vectors_embedded"] += len(rows)
        with self._conn() as conn:
            if self.vectors.schema is not None:
                # pgvector: the vector column only (``vec`` NULL); ranking reads coalesce(pvec, vec::vector).
                vtype = self.vectors.names(conn)[0]
                conn.execute(
                    "INSERT INTO filemem_vectors (cfg, ns, key, version, vec, pvec)"
                    " SELECT %s, u.ns, u.key, u.version, NULL, CASE WHEN u.j = 'null' THEN NULL"
                    f"   ELSE ARRAY(SELECT jsonb_array_elements_text(u.j::jsonb)::real)::{vtype} END"
                    " FROM unnest(%s::text[], %s::text[], %s::int8[], %s::text[]) AS u(ns, key, version, j)"
                    " ON CONFLICT (cfg, ns, key) DO UPDATE SET version = excluded.version, vec = NULL,"
                    " pvec = excluded.pvec WHERE filemem_vectors.version < excluded.version",
                    (self.cfg, out[0], out[1], out[2], [json.dumps(v) for v in out[3]]),
                )
                return
            conn.execute(
                "INSERT INTO filemem_vectors (cfg, ns, key, version, vec)"
                " SELECT %s, u.ns, u.key, u.version, CASE WHEN u.j = 'null' THEN NULL"
                "   ELSE ARRAY(SELECT jsonb_array_elements_text(u.j::jsonb)::real) END"
                " FROM unnest(%s::text[], %s::text[], %s::int8[], %s::text[]) AS u(ns, key, version, j)"
                " ON CONFLICT (cfg, ns, key) DO UPDATE SET version = excluded.version, vec = excluded.vec"
                " WHERE filemem_vectors.version < excluded.version",
                (self.cfg, out[0], out[1], out[2], [json.dumps(v) for v in out[3]]),
            )

    def _embed_value(self, value: Any) -> array[float] | None:
        assert self.embed is not None
        texts = record_text(value, self.fields)
        if not texts:
            return None
        try:
            got = array("f", [float(x) for x in self.embed(" ".join(texts))])
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidValueError(f"embed must return a sequence of numbers: {exc}") from exc
        if not got:
            raise InvalidValueError("embed returned an empty vector")
        return got

    def _cosine(
        self,
        conn: psycopg.Connection[Any],
        prefix: tuple[str, ...],
        q: list[float],
        pred: Predicate | None,
        where: tuple[str, list[Any]],
        want: int | None,
    ) -> list[_Hit]:
        if self.vectors.schema is not None and not self.readonly:
            return self._cosine_pgvector(conn, prefix, q, pred, where, want)
        vec_sql = "v.vec::float8[]"  # float4 -> float8 is exact; float4 text is not
        qn = norm(q)
        hits: list[_Hit] = []
        dim = 0
        if self.readonly:
            rows: Iterator[tuple[Any, ...]] = self._rows(conn, prefix, where, ", NULL::real[], NULL::int8")
        else:
            rows = self._rows(
                conn,
                prefix,
                where,
                f", {vec_sql}, v.version",
                "JOIN filemem_vectors v ON v.cfg = %s AND v.ns = r.ns AND v.key = r.key",
                (self.cfg,),
            )
        for row in rows:
            got = self._hit(row[:7], pred)
            if got is None:
                continue
            if self.readonly:
                rec = self._record(got[2])
                vec: Sequence[float] | None = self._embed_value(rec["value"])
            elif row[8] != row[3]:
                continue  # a vector of an older version: written meanwhile, never used
            else:
                vec = row[7]
                self.counters["vector_rows_read"] += 1
            if vec is None:
                continue
            if dim and len(vec) != dim:
                raise InvalidValueError(f"embed returned vectors of {dim} and {len(vec)} dimensions")
            dim = len(vec)
            if dim != len(q):
                raise InvalidQueryError(f"vector has {len(q)} dimensions; the index holds {dim}")
            vn = norm(vec)
            if vn:
                hits.append((got[0], got[1], cosine(q, qn, vec, vn), got[2]))
        return hits

    def _fuse_pgvector(
        self,
        conn: psycopg.Connection[Any],
        prefix: tuple[str, ...],
        bm25: list[_Hit],
        q: list[float],
        pred: Predicate | None,
        where: tuple[str, list[Any]],
        want: int,
    ) -> list[_Hit]:
        """The fusion's first ``want`` hits (at least), the vector ranking read from pgvector only as needed."""
        cands = candidates_sql(self.vectors, conn, self._scope(prefix, "r.ns"), where, self.cfg, q)
        order = PgvectorOrder(conn, cands, q, pred, self._hit, self.counters)
        stats = FusionStats()
        try:
            return fuse_top(bm25, order, want, stats)
        finally:
            order.close()
            self.counters["vector_ranks_asked"] += stats.asked
            self.counters["hybrid_whole_reads"] += stats.whole

    def _cosine_pgvector(
        self,
        conn: psycopg.Connection[Any],
        prefix: tuple[str, ...],
        q: list[float],
        pred: Predicate | None,
        where: tuple[str, list[Any]],
        want: int | None,
    ) -> list[_Hit]:
        """Rows in pgvector's cosine order, scored here exactly; with ``want``, only until none left can place.

        The server's similarity of a row is within ``cosine_margin`` of its
        exact score, and rows come in falling server similarity: once
        ``want`` hits are held and a row's server similarity plus the margin
        is below the ``want``-th best exact score, every row not yet read
        scores strictly lower, so the page and all its ties are complete.
        """
        inner, params = candidates_sql(self.vectors, conn, self._scope(prefix, "r.ns"), where, self.cfg, q)
        # NULL distance: a vector of another dimension (raised below from the window's min/max).
        sql = (
            f"SELECT {_COLS.replace('r.', 'x.')}, x.pv::real[]::float8[], x.dist,"
            " min(x.dims) OVER (), max(x.dims) OVER (), min(x.norm) OVER (), max(x.norm) OVER ()"
            f" FROM ({inner}) x ORDER BY x.dist"
        )
        qn = norm(q)
        margin = cosine_margin(len(q))
        hits: list[_Hit] = []
        best: list[float] = []  # a min-heap of the ``want`` best exact scores held
        checked = False
        with conn.cursor(name="filemem_vec") as cur:
            cur.itersize = _ITERSIZE if want is None else min(_ITERSIZE, max(64, 2 * want))
            cur.execute(sql, params)
            for row in cur:
                vec, dist = row[7:9]
                if not checked:
                    if not check_first(q, qn, row[9:13]):
                        want = None  # float4 may under- or overflow: the margin does not hold, read all
                    checked = True
                if want is not None and len(best) >= want and dist is not None and (1.0 - dist) + margin < best[0]:
                    break  # NaN (a zero vector) never stops the stream: it compares False
                self.counters["vector_rows_read"] += 1
                got = self._hit(row[:7], pred)
                if got is None:
                    continue
                vn = norm(vec)
                if not vn:
                    continue
                score = cosine(q, qn, vec, vn)
                hits.append((got[0], got[1], score, got[2]))
                if want is not None:
                    if len(best) < want:
                        heapq.heappush(best, score)
                    elif score > best[0]:
                        heapq.heapreplace(best, score)
        return hits


def unique_terms(query: str) -> list[str]:
    """The query's terms, once each, in order (as the file store's searcher takes them)."""
    return list(dict.fromkeys(tokenize(query)))
