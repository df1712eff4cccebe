"""Search results as the kinds see them, and a scan fallback for stores without ``search``.

``Store.search`` (issue 6, search half) ranks with an index kept beside the
records. When a store does not offer it, :func:`fallback_search` gives the same
answer the slow way: list the namespaces under the prefix, read them, apply
the filter (equality and ``$gt/$gte/$lt/$lte/$ne/$in``) and rank by BM25 over
every string in the value, with the statistics of every record under the prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import InvalidValueError
from ._steps import Call, Plan
from ._text import bm25_scores, text_of

__all__ = ["Hit", "fallback_search", "matches"]

_OPS = ("$gt", "$gte", "$lt", "$lte", "$ne", "$in", "$eq")


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: where the record lives, its value and its score (higher is better)."""

    namespace: tuple[str, ...]
    key: str
    value: Any
    score: float = 0.0

    @classmethod
    def of(cls, obj: Any) -> Hit:
        """Adapt whatever ``Store.search`` returns (an object with these attributes, or a mapping)."""
        if isinstance(obj, Hit):
            return obj
        if isinstance(obj, Mapping):
            return cls(tuple(obj["namespace"]), obj["key"], obj["value"], float(obj.get("score") or 0.0))
        item = getattr(obj, "item", obj)  # Store.search returns SearchHit(item, score)
        return cls(tuple(item.namespace), item.key, item.value, float(getattr(obj, "score", 0.0) or 0.0))


def _field(value: Any, path: str) -> tuple[bool, Any]:
    cur = value
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _cmp(op: str, have: Any, want: Any) -> bool:
    try:
        if op == "$eq":
            return bool(have == want)
        if op == "$ne":
            return bool(have != want)
        if op == "$in":
            return have in want
        if op == "$gt":
            return bool(have > want)
        if op == "$gte":
            return bool(have >= want)
        if op == "$lt":
            return bool(have < want)
        return bool(have <= want)
    except TypeError:  # comparing a str with a number: not a match, not an error
        return False


def matches(value: Any, flt: Mapping[str, Any] | None) -> bool:
    """Whether ``value`` passes ``flt`` (``{"field": 3}`` or ``{"field": {"$gte": 3}}``; dotted paths)."""
    if not flt:
        return True
    for path, cond in flt.items():
        found, have = _field(value, path)
        if isinstance(cond, Mapping) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond):
            for op, want in cond.items():
                if op not in _OPS:
                    raise InvalidValueError(f"unknown filter operator {op!r} (use one of {', '.join(_OPS)})")
                if op == "$ne":
                    if found and not _cmp(op, have, want):
                        return False
                elif not found or not _cmp(op, have, want):
                    return False
        elif not found or have != cond:
            return False
    return True


def fallback_search(
    prefix: tuple[str, ...], query: str | None, flt: dict[str, Any] | None, limit: int, offset: int
) -> Plan[list[Hit]]:
    """A plan: scan every namespace under ``prefix``, filter, rank by BM25 (ties: namespace, key).

    As ``Store.search``: the BM25 statistics (N, document frequencies, mean
    length) count every live record under the prefix, not only those passing
    the filter.
    """
    namespaces = yield Call("list_namespaces", (prefix,))
    every: list[tuple[Hit, bool]] = []
    for ns in namespaces:
        for item in (yield Call("items", (ns,))):
            every.append((Hit(tuple(item.namespace), item.key, item.value, 1.0), matches(item.value, flt)))
    if query:
        scores = bm25_scores(query, [text_of(h.value) for h, _ in every])
        found = [
            Hit(h.namespace, h.key, h.value, sc) for (h, ok), sc in zip(every, scores, strict=True) if ok and sc > 0
        ]
    else:
        found = [h for h, ok in every if ok]
    found.sort(key=lambda h: (-h.score, h.namespace, h.key))
    return found[offset : offset + limit]
