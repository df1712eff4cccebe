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

from .._search._filter import compile_filter
from ._steps import Call, Plan
from ._text import bm25_scores, text_of

__all__ = ["Hit", "fallback_search", "matches"]


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


def matches(value: Any, flt: Mapping[str, Any] | None) -> bool:
    """Whether ``value`` passes ``flt``, by exactly the rules of ``Store.search`` (its own compiled filter)."""
    pred = compile_filter(flt) if flt else None
    return pred is None or pred(value)


def fallback_search(
    prefix: tuple[str, ...], query: str | None, flt: dict[str, Any] | None, limit: int, offset: int
) -> Plan[list[Hit]]:
    """A plan: scan every namespace under ``prefix``, filter, rank by BM25 (ties: namespace, key).

    As ``Store.search``: the BM25 statistics (N, document frequencies, mean
    length) count every live record under the prefix, not only those passing
    the filter.
    """
    pred = compile_filter(flt) if flt else None  # bad filters fail here, before anything is read
    namespaces = yield Call("list_namespaces", (prefix,))
    every: list[tuple[Hit, bool]] = []
    for ns in namespaces:
        for item in (yield Call("items", (ns,))):
            ok = pred is None or pred(item.value)
            every.append((Hit(tuple(item.namespace), item.key, item.value, 1.0), ok))
    if query:
        scores = bm25_scores(query, [text_of(h.value) for h, _ in every])
        found = [
            Hit(h.namespace, h.key, h.value, sc) for (h, ok), sc in zip(every, scores, strict=True) if ok and sc > 0
        ]
    else:
        found = [h for h, ok in every if ok]
    found.sort(key=lambda h: (-h.score, h.namespace, h.key))
    return found[offset : offset + limit]
