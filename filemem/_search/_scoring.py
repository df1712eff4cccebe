"""Ranking one search's candidates: BM25, cosine similarity, reciprocal rank fusion, the page (layer L4).

BM25 uses k1 = 1.2, b = 0.75 and idf = ln(1 + (N - df + 0.5)/(df + 0.5)) over
the unique query terms, with N, df and the average length counted over every
live record under the prefix (before the filter); cosine similarity for
vectors; reciprocal rank fusion (k = 60) when both are given; ties in
(namespace, key) order. docs/search.md states the same for users.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .._errors import InvalidQueryError
from .._shard import Shard
from ._filter import Predicate
from ._segment import Segment, norm

__all__ = ["K1", "RRF_K", "B", "DocRef", "Part", "cosine", "norm", "query_vector", "rank"]


def query_vector(
    embed: Callable[[str], Sequence[float]] | None, vector: Sequence[float] | str | None
) -> list[float] | None:
    """A search's query vector as floats: a text is embedded with ``embed``; every backend checks it this way.

    Example: ``query_vector(None, [1, 0])`` is ``[1.0, 0.0]``; ``query_vector(None, "hi")`` raises.
    """
    if vector is None:
        return None
    if embed is None:
        raise InvalidQueryError("vector search needs a store opened with embed= (and the records it indexed)")
    raw: Any = embed(vector) if isinstance(vector, str) else vector
    try:
        q = [float(x) for x in raw]
    except (TypeError, ValueError) as exc:
        raise InvalidQueryError(f"vector must be a sequence of numbers or a text to embed: {exc}") from exc
    if not q or not all(math.isfinite(x) for x in q) or not any(q):
        raise InvalidQueryError("vector must be a non-empty, finite, non-zero sequence of numbers")
    return q


K1: Final = 1.2
B: Final = 0.75
#: Reciprocal rank fusion constant (the usual 60, from Cormack et al. 2009).
RRF_K: Final = 60

#: (part index, doc index) inside one search.
DocRef = tuple[int, int]


@dataclass(slots=True)
class Part:
    """One shard's segment as one search uses it."""

    ns: tuple[str, ...]
    prefix: str
    path: str
    seg: Segment
    own: Callable[[str], bool] | None
    shard: Shard | None


def rank(
    parts: list[Part],
    pred: Predicate | None,
    terms: list[str] | None,
    qvec: list[float] | None,
    limit: int,
    offset: int,
) -> list[tuple[DocRef, float]]:
    """The page ``[offset, offset + limit)`` of the ranking of ``parts`` as (doc, score), best first."""
    now = time.time()
    n_docs = 0
    total_len = 0
    cands: list[list[bool] | None] = []  # None: every doc of the part is a candidate
    lives: list[list[bool] | None] = []
    for part in parts:
        seg = part.seg
        live: list[bool] | None = None
        if part.own is not None or seg.has_expiry:
            own = part.own
            live = [
                (x is None or x > now) and (own is None or own(k)) for k, x in zip(seg.keys, seg.expires, strict=True)
            ]
            n_docs += sum(live)
            total_len += sum(n for n, ok in zip(seg.lens, live, strict=True) if ok)
        else:
            n_docs += seg.n
            total_len += seg.total_len
        lives.append(live)
        cand = live
        if pred is not None:
            shard = part.shard
            assert shard is not None
            recs = shard.records
            cand = [(live is None or live[i]) and pred(recs[k]["value"]) for i, k in enumerate(seg.keys)]
        cands.append(cand)

    def sort_key(ref: DocRef, score: float) -> tuple[float, tuple[str, ...], str]:
        part = parts[ref[0]]
        return (-score, part.ns, part.seg.keys[ref[1]])

    want = offset + limit
    bm25 = _bm25(parts, lives, cands, terms, n_docs, total_len) if terms is not None else None
    cos = _cosine(parts, cands, qvec) if qvec is not None else None
    if bm25 is not None and cos is not None:
        fused: dict[DocRef, float] = {}
        for ranking in (bm25, cos):
            ordered = sorted(ranking.items(), key=lambda kv: sort_key(*kv))
            for rank, (ref, _) in enumerate(ordered, 1):
                fused[ref] = fused.get(ref, 0.0) + 1.0 / (RRF_K + rank)
        scored = fused
    elif bm25 is not None:
        scored = bm25
    elif cos is not None:
        scored = cos
    else:
        scored = {
            (pi, doc): 1.0
            for pi, (part, cand) in enumerate(zip(parts, cands, strict=True))
            for doc in range(part.seg.n)
            if cand is None or cand[doc]
        }
    pool = list(scored.items())
    if len(pool) > want:
        # Select by score first, so keys (for tie order) are decoded only
        # for the page's candidates; every record tied with the last one
        # selected stays in the pool.
        cutoff = heapq.nsmallest(want, pool, key=lambda kv: -kv[1])[-1][1]
        pool = [kv for kv in pool if kv[1] >= cutoff]
    pool.sort(key=lambda kv: sort_key(*kv))
    return pool[offset:want]


def _bm25(
    parts: list[Part],
    lives: list[list[bool] | None],
    cands: list[list[bool] | None],
    terms: list[str],
    n_docs: int,
    total_len: int,
) -> dict[DocRef, float]:
    scores: dict[DocRef, float] = {}
    if not n_docs or not total_len:
        return scores
    avgdl = total_len / n_docs
    for term in terms:
        hits: list[tuple[int, Any]] = []
        df = 0
        for pi, part in enumerate(parts):
            p = part.seg.postings(term)
            if p is None:
                continue
            hits.append((pi, p))
            live = lives[pi]
            df += len(p) // 2 if live is None else sum(1 for i in range(0, len(p), 2) if live[p[i]])
        if not df:
            continue
        idf = math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
        for pi, p in hits:
            cand = cands[pi]
            lens = parts[pi].seg.lens
            for i in range(0, len(p), 2):
                doc = p[i]
                if cand is not None and not cand[doc]:
                    continue
                tf = p[i + 1]
                s = idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * lens[doc] / avgdl))
                ref = (pi, doc)
                scores[ref] = scores.get(ref, 0.0) + s
    return scores


def cosine(q: Sequence[float], qn: float, v: Sequence[float], vn: float) -> float:
    """The exact cosine of ``q`` (length ``qn``) and ``v`` (length ``vn``, not 0).

    One definition for the file store and the PostgreSQL backend, whose
    scores must be equal to the last bit (``math.fsum``: the sum's order
    does not move the result).
    """
    return math.fsum(a * b for a, b in zip(q, v, strict=True)) / (qn * vn)


def _cosine(parts: list[Part], cands: list[list[bool] | None], q: list[float]) -> dict[DocRef, float]:
    qn = norm(q)
    out: dict[DocRef, float] = {}
    for pi, part in enumerate(parts):
        seg = part.seg
        if seg.dim and seg.dim != len(q):
            raise InvalidQueryError(f"vector has {len(q)} dimensions; the index holds {seg.dim}")
        cand = cands[pi]
        for doc, v in enumerate(seg.vectors):
            if v is None or (cand is not None and not cand[doc]):
                continue
            vn = seg.norms[doc]
            if vn:
                out[(pi, doc)] = cosine(q, qn, v, vn)
    return out
