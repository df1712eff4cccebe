"""Reciprocal rank fusion of BM25 and vector rankings, the vector one read only as far as the page needs (issue 16).

Invariant: ``fuse_top(bm25, order, want)`` holds the first ``want`` hits of
``fuse_all(bm25, cos)``, where ``cos`` is the complete vector ranking
``order`` would yield, with the same keys, order and scores bit for bit;
``fuse_all`` is the file store's fusion (``_search._scoring.rank``): each
ranking sorted by (-score, namespace, key), a hit's fused score is
``0.0 + 1/(RRF_K + bm25 rank) + 1/(RRF_K + vector rank)``, each term only
where the hit is in that ranking, added in that order.

How ``fuse_top`` stops early (Fagin's threshold algorithm, with RRF's
bounded terms). The BM25 ranking is complete. The vector ranking arrives in
batches with a bound T: no candidate not yet read scores above T. So the
read candidates scoring above T, sorted, are exactly the first j of the
vector ranking (any candidate ahead of one of them scores at least as much,
so it was read), and every other candidate has vector rank j + 1 or worse:
its fused score is at most ``b + 1/(RRF_K + j + 1)`` in floats too (IEEE
division and addition are monotonic), with b its BM25 term (0.0 outside the
BM25 ranking). Those first j, and any record whose exact vector rank was
asked for (``VectorOrder.ranks``), have known fused scores. Once ``want``
are known and no bound of an unknown record reaches the ``want``-th known
one (in (-score, namespace, key) order; a record outside the BM25 ranking
has no key to compare, so its bound must be strictly lower), no unknown
record can enter the page: the page is the known records' first ``want``.
BM25 hits whose bound still reaches it are few once j has grown a little:
their vector ranks are asked for, in one go, when that is cheaper than
reading on. A vector ranking read to the end is fused whole, as on files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..._search._scoring import RRF_K

__all__ = ["FusionStats", "Hit", "VectorOrder", "fuse_all", "fuse_top"]

#: (namespace, key, score, raw row) as the ranker passes hits around.
Hit = tuple[tuple[str, ...], str, float, tuple[Any, ...]]
_Key = tuple[tuple[str, ...], str]


def _order(h: Hit) -> tuple[float, tuple[str, ...], str]:
    return (-h[2], h[0], h[1])


class VectorOrder(Protocol):
    """A vector ranking read in batches (``_vector_order.PgvectorOrder`` on the server)."""

    def next_batch(self) -> tuple[list[Hit], float | None] | None:
        """The next candidates read, exactly scored, and T (None: no bound yet); None once all are read."""

    def ranks(self, targets: Sequence[Hit]) -> dict[_Key, int | None]:
        """Each target's exact rank in the complete vector ranking (None: not in it, e.g. no vector)."""


def fuse_all(bm25: list[Hit], cos: list[Hit]) -> list[Hit]:
    """The fusion of two complete rankings, as the file store computes it (unsorted)."""
    fused: dict[_Key, list[Any]] = {}
    for ranking in (bm25, cos):
        ranking.sort(key=_order)
        for rank, (ns, key, _, row) in enumerate(ranking, 1):
            got = fused.setdefault((ns, key), [0.0, row])
            got[0] += 1.0 / (RRF_K + rank)
    return [(ns, key, s, row) for (ns, key), (s, row) in fused.items()]


class FusionStats:
    """What one ``fuse_top`` did, for the ranker's counters."""

    __slots__ = ("asked", "whole")

    def __init__(self) -> None:
        self.asked = 0  # vector ranks asked for
        self.whole = False  # the vector ranking was read to its end


def fuse_top(bm25: list[Hit], order: VectorOrder, want: int, stats: FusionStats | None = None) -> list[Hit]:
    """At least the first ``want`` hits of the fusion of ``bm25`` (complete) and ``order``'s ranking (unsorted)."""
    stats = stats if stats is not None else FusionStats()
    bm = sorted(bm25, key=_order)
    bterm = {(h[0], h[1]): 1.0 / (RRF_K + r) for r, h in enumerate(bm, 1)}
    brow = {(h[0], h[1]): h[3] for h in bm}
    read: list[Hit] = []
    asked: dict[_Key, int | None] = {}
    while True:
        got = order.next_batch()
        if got is None:
            stats.whole = True
            return fuse_all(bm25, read)
        batch, bound = got
        read.extend(batch)
        if bound is None or want <= 0:
            continue
        read.sort(key=_order)
        j = 0
        while j < len(read) and read[j][2] > bound:
            j += 1
        while True:
            known = _known(read[:j], asked, bterm, brow)
            if len(known) < want:
                break
            known.sort(key=_order)
            last = known[want - 1]
            c = 1.0 / (RRF_K + j + 1)
            if not c < last[2]:
                # A record outside the BM25 ranking could still place. (Not reached: want records are
                # known only once j >= want, and the want-th of the first j scores at least
                # 1/(RRF_K + want) > c. Kept: it is the rule, the arithmetic is the proof.)
                break
            have = {(h[0], h[1]) for h in known}
            need = []
            for h in bm:
                ub = bterm[(h[0], h[1])] + c
                if ub < last[2]:
                    break  # BM25 order: every later bound is lower still
                if (h[0], h[1]) not in have and (-ub, h[0], h[1]) < _order(last):
                    need.append(h)
            if not need:
                return known[:want]
            if len(need) > max(len(read), 1):
                break  # cheaper to read on: the next batch lowers every bound
            stats.asked += len(need)
            asked.update(order.ranks(need))


def _known(
    placed: list[Hit], asked: dict[_Key, int | None], bterm: dict[_Key, float], brow: dict[_Key, tuple[Any, ...]]
) -> list[Hit]:
    """The records whose fused score is known: the first ``len(placed)`` of the vector ranking, and ``asked``."""
    out: dict[_Key, Hit] = {}
    ranks: dict[_Key, tuple[int | None, tuple[Any, ...]]] = {}
    for place, (ns, key, _, row) in enumerate(placed, 1):
        ranks[(ns, key)] = (place, row)
    for k, asked_rank in asked.items():
        if k not in ranks:
            ranks[k] = (asked_rank, brow[k])
    for (ns, key), (vrank, row) in ranks.items():
        # The file store's order of operations: 0.0, plus the BM25 term, plus the vector term.
        score = 0.0
        b = bterm.get((ns, key))
        if b is not None:
            score += b
        if vrank is not None:
            score += 1.0 / (RRF_K + vrank)
        out[(ns, key)] = (ns, key, score, row)
    return list(out.values())
