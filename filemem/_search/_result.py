"""The public result type of a search (layer L4)."""

from __future__ import annotations

from dataclasses import dataclass

from .._types import Item

__all__ = ["SearchHit"]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result: the record and how well it matched.

    ``score`` is the BM25 score for a keyword query, the cosine similarity for
    a vector search, the reciprocal-rank-fusion score when both are given, and
    ``1.0`` for a filter-only search. Higher is better; hits come best first,
    ties in (namespace, key) order.

    Example::

        for hit in store.search(("agent-1",), query="login timeout", limit=5):
            print(round(hit.score, 2), hit.item.key, hit.item.value)
    """

    item: Item
    score: float
