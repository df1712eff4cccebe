"""Filter-only search on PostgreSQL: the jsonb copy narrows, the file store's own predicate decides (issue 16).

Invariant: a hit is exactly what ``Store.search`` on files returns for the
same records and filter. The SQL condition built from the filter is only a
superset test (it never drops a record the predicate would keep): numbers
compare as ``numeric`` against a bound widened past any float rounding
(LangGraph's Postgres store compares ``$gt`` as text and misses ``10 > 8``;
here ``10 > 8``), strings in the "C" collation (code-point order, as Python),
``$eq`` on strings, booleans and null as jsonb equality; ``$ne``, ``$in`` and
lists are left to the predicate, and so is every record whose jsonb copy is
NULL. Then ``filemem._search._filter``'s predicate runs on the decoded value.
Hits are ordered by (namespace, key) as tuples, score 1.0, then paged.

Keyword (``query=``) and vector (``vector=``) ranking are ``_rank``'s, over
the same narrowing and predicate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from ..._search import SearchHit
from ..._search._filter import check_search_args, compile_filter, parse_filter
from ..._snapshot import item_of
from ...codecs import Codec
from ._names import INTERNAL_TEXT, decode_ns, prefix_range
from ._rank import Ranker, unique_terms
from ._writes import NOW_SQL, record_of

__all__ = ["search"]

_WIDEN: Final = Decimal("1e-9")
_SQL_OPS: Final = {"$gt": ">=", "$gte": ">=", "$lt": "<=", "$lte": "<="}  # widened: the predicate is exact


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _narrowing(clauses: list[tuple[tuple[str, ...], str, Any]], doc: str = "doc") -> tuple[str, list[Any]]:
    """SQL that every matching record passes (``TRUE`` when nothing can be said); ``doc``: the jsonb column."""
    parts: list[str] = []
    params: list[Any] = []
    for path, op, operand in clauses:
        p = list(path)
        if op in _SQL_OPS and _is_number(operand):
            bound = Decimal(operand)
            slack = abs(bound) * _WIDEN + Decimal("1e-300")
            bound = bound - slack if op in ("$gt", "$gte") else bound + slack
            parts.append(
                f"(CASE WHEN jsonb_typeof({doc} #> %s) = 'number'"
                f" THEN ({doc} #>> %s)::numeric {_SQL_OPS[op]} %s::numeric"
                " ELSE false END)"
            )
            params += [p, p, str(bound)]
        elif op in _SQL_OPS and isinstance(operand, str):
            parts.append(
                f"(CASE WHEN jsonb_typeof({doc} #> %s) = 'string'"
                f' THEN ({doc} #>> %s) COLLATE "C" {_SQL_OPS[op]} %s COLLATE "C" ELSE false END)'
            )
            params += [p, p, operand]
        elif op == "$eq" and (isinstance(operand, (str, bool)) or operand is None):
            parts.append(f"({doc} #> %s) = %s::jsonb")
            params += [p, json.dumps(operand)]
    if not parts:
        return "TRUE", []
    return f"({doc} IS NULL OR (" + " AND ".join(parts) + "))", params


def search(
    query_rows: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]],
    codec: Codec,
    prefix: tuple[str, ...],
    query: str | None,
    filter: Mapping[str, Any] | None,
    limit: int,
    offset: int,
    vector: Sequence[float] | str | None,
    ranker: Ranker,
) -> list[SearchHit]:
    """See :meth:`filemem.Store.search` (``prefix`` already checked)."""
    check_search_args(query, limit, offset)
    clauses = parse_filter(filter) if filter is not None else []
    pred = compile_filter(filter)
    qvec = ranker.query_vector(vector)
    terms = unique_terms(query) if query is not None else None
    if limit == 0 or (terms == [] and qvec is None):
        return []  # a query with no word in it matches nothing
    if terms is not None or qvec is not None:
        if qvec is not None:
            ranker.fill_vectors(prefix)
        return ranker.rank(prefix, terms, qvec, pred, _narrowing(clauses, "r.doc"), limit, offset)
    where, params = _narrowing(clauses)
    rng = prefix_range(prefix)
    sql = (
        "SELECT ns, key, value, version, created_at, updated_at, expires_at FROM filemem_records"
        f" WHERE (expires_at IS NULL OR expires_at > {NOW_SQL}) AND {where}"
    )
    args: list[Any] = list(params)
    if rng is not None:
        sql += " AND (ns = %s OR (ns >= %s AND ns < %s))"
        args += list(rng)
    hits: list[tuple[tuple[str, ...], str, Any]] = []
    for ns_text, key, *rest in query_rows(sql, tuple(args)):
        if ns_text.startswith(INTERNAL_TEXT):
            continue
        ns = decode_ns(ns_text)
        if ns is None:
            continue
        rec = record_of(tuple(rest), codec)
        if pred is None or pred(rec["value"]):
            hits.append((ns, key, rec))
    hits.sort(key=lambda h: (h[0], h[1]))
    return [SearchHit(item_of(ns, key, rec), 1.0) for ns, key, rec in hits[offset : offset + limit]]
