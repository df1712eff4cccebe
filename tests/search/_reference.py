"""A straightforward reference search: every record read with items(), scored from scratch.

Written from the definitions in docs/search.md, independently of
filemem._search, so the tests compare two implementations.
"""

from __future__ import annotations

import itertools
import math
import re
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import filemem

MISSING = object()


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def text_of(value: Any, fields: Sequence[str] | None) -> list[str]:
    if fields is None:
        return strings(value)
    out: list[str] = []
    for f in fields:
        v = get_path(value, f)
        if v is not MISSING:
            out.extend(strings(v))
    return out


def terms(texts: list[str]) -> list[str]:
    return [t for s in texts for t in re.findall(r"\w+", s.casefold())]


def get_path(value: Any, path: str) -> Any:
    for seg in path.split("."):
        if not isinstance(value, dict) or seg not in value:
            return MISSING
        value = value[seg]
    return value


def eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b, strict=False))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(eq(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, dict)) or isinstance(b, (list, tuple, dict)):
        return False
    return a == b


def num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def cond_ok(v: Any, op: str, arg: Any) -> bool:
    if v is MISSING:
        return op == "$ne"
    if op == "$eq":
        return eq(v, arg)
    if op == "$ne":
        return not eq(v, arg)
    if op == "$in":
        return any(eq(v, a) for a in arg)
    if not ((num(v) and num(arg)) or (isinstance(v, str) and isinstance(arg, str))):
        return False
    return {"$gt": v > arg, "$gte": v >= arg, "$lt": v < arg, "$lte": v <= arg}[op]


def matches(value: Any, flt: dict[str, Any] | None) -> bool:
    for path, cond in (flt or {}).items():
        v = get_path(value, path)
        if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
            if not all(cond_ok(v, op, arg) for op, arg in cond.items()):
                return False
        elif not cond_ok(v, "$eq", cond):
            return False
    return True


Ranked = list[tuple[tuple[tuple[str, ...], str], float]]


def rank(scores: dict[tuple[tuple[str, ...], str], float]) -> Ranked:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))


def reference(
    store: filemem.Store,
    prefix: Any,
    query: str | None = None,
    flt: dict[str, Any] | None = None,
    vector: Sequence[float] | None = None,
    embed: Callable[[str], Sequence[float]] | None = None,
    fields: Sequence[str] | None = None,
) -> Ranked:
    """The full ranking (no paging) as ((namespace, key), score), best first."""
    items = [it for ns in store.list_namespaces(prefix) for it in store.items(ns)]
    docs = {(it.namespace, it.key): terms(text_of(it.value, fields)) for it in items}
    cands = {(it.namespace, it.key): it.value for it in items if matches(it.value, flt)}
    bm25: dict[Any, float] | None = None
    if query is not None:
        q = list(dict.fromkeys(terms([query])))
        n = len(docs)
        avgdl = sum(len(t) for t in docs.values()) / n if n else 0.0
        bm25 = {}
        for term in q:
            df = sum(1 for t in docs.values() if term in t)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for ref in cands:
                tf = docs[ref].count(term)
                if tf:
                    s = idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * len(docs[ref]) / avgdl))
                    bm25[ref] = bm25.get(ref, 0.0) + s
    cos: dict[Any, float] | None = None
    if vector is not None:
        assert embed is not None
        cos = {}
        qn = math.sqrt(sum(x * x for x in vector))
        for ref, value in cands.items():
            texts = text_of(value, fields)
            if not texts:
                continue
            v = array("f", embed(" ".join(texts)))  # stored as float32
            nv = math.sqrt(sum(x * x for x in v))
            if nv:
                cos[ref] = sum(a * b for a, b in zip(vector, v, strict=False)) / (qn * nv)
    if bm25 is not None and cos is not None:
        fused: dict[Any, float] = {}
        for ranking in (rank(bm25), rank(cos)):
            for i, (ref, _) in enumerate(ranking, 1):
                fused[ref] = fused.get(ref, 0.0) + 1 / (60 + i)
        return rank(fused)
    if bm25 is not None:
        return rank(bm25)
    if cos is not None:
        return rank(cos)
    return rank(dict.fromkeys(cands, 1.0))


def assert_same(got: list[filemem.SearchHit], full: Ranked, offset: int, limit: int, store: filemem.Store) -> None:
    """``got`` is the page [offset, offset+limit) of the reference ranking (scores to 1e-9)."""
    want = full[offset : offset + limit]
    assert len(got) == len(want), (got, want)
    scores = dict(full)
    for hit, (_, wscore) in zip(got, want, strict=False):
        ref = (hit.item.namespace, hit.item.key)
        assert ref in scores, ref
        assert math.isclose(hit.score, scores[ref], rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(hit.score, wscore, rel_tol=1e-9, abs_tol=1e-12)
        assert hit.item.value == store.get(hit.item.namespace, hit.item.key, consistency="strict")
    # Where the reference's score is not within float noise of another
    # (different) score, the very same record must be at that position.
    all_scores = [sc for _, sc in full]
    for i, (hit, (wref, wscore)) in enumerate(zip(got, want, strict=False)):
        noisy = any(sc != wscore and math.isclose(sc, wscore, rel_tol=1e-9) for sc in all_scores)
        if not noisy:
            assert (hit.item.namespace, hit.item.key) == wref, (i, hit, wref)
    # Where scores differ clearly, the order is the reference's.
    for a, b in itertools.pairwise(got):
        assert a.score >= b.score - 1e-9
        if math.isclose(a.score, b.score, rel_tol=1e-9):
            continue
        assert a.score > b.score
