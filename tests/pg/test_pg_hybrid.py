"""Hybrid search (``query=`` and ``vector=``) on pgvector reads only the vectors its page needs (issue 16).

The page is the file store's fusion of the two complete rankings, bit for
bit (scores compared with ``==``), whether the vector ranking was read to the
end or stopped early (``_fusion.fuse_top``). The first test checks the
stopping rule itself against the plain fusion on random rankings full of
ties, with an order as inexact as pgvector's; the others run real searches
on both servers (``vec_url``) against a file store, and count the vector rows
read (``stats()["vector_rows_read"]``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from filemem import Store
from filemem._backends.postgres._fusion import FusionStats, Hit, fuse_all, fuse_top
from tests.conformance.test_search_ranked import FILTERS, PREFIXES, QUERIES, _fill
from tests.pg.test_pgvector import _near_embed, _page
from tests.search.test_vectors import toy_embed

pytestmark = pytest.mark.postgres

_Key = tuple[tuple[str, ...], str]


class _FakeOrder:
    """A vector ranking served as pgvector serves it: in an order off by up to ``margin``, in batches."""

    def __init__(self, cos: list[Hit], margin: float, rnd: random.Random) -> None:
        self.exact = sorted(cos, key=lambda h: (-h[2], h[0], h[1]))
        noisy = [(h[2] + rnd.uniform(-margin, margin), h) for h in cos]
        noisy.sort(key=lambda x: -x[0])
        self.stream = noisy
        self.margin = margin
        self.rnd = rnd
        self.pos = 0
        self.read = 0

    def next_batch(self) -> tuple[list[Hit], float | None] | None:
        if self.pos >= len(self.stream):
            return None
        n = self.rnd.randint(1, 6)
        batch = self.stream[self.pos : self.pos + n]
        self.pos += len(batch)
        self.read += len(batch)
        return [h for _, h in batch], batch[-1][0] + self.margin

    def ranks(self, targets: Sequence[Hit]) -> dict[_Key, int | None]:
        place = {(h[0], h[1]): i for i, h in enumerate(self.exact, 1)}
        return {(t[0], t[1]): place.get((t[0], t[1])) for t in targets}


def _random_rankings(rnd: random.Random) -> tuple[list[Hit], list[Hit]]:
    docs = [((rnd.choice("abc"),), f"k{i}") for i in range(rnd.randint(0, 60))]
    # Few distinct scores: ties everywhere, in each ranking and in the fused one.
    levels = [rnd.uniform(0, 1) for _ in range(rnd.randint(1, 8))]
    bm25 = [(ns, k, rnd.choice(levels), (k,)) for ns, k in docs if rnd.random() < 0.5]
    cos = [(ns, k, rnd.choice(levels), (k,)) for ns, k in docs if rnd.random() < 0.8]
    return bm25, cos


def test_the_early_stop_gives_the_plain_fusion_bit_for_bit() -> None:
    """Random rankings, ties, inexact order, every page size: ``fuse_top``'s first hits are ``fuse_all``'s."""
    rnd = random.Random(16)
    stopped_early = asked = 0
    for _ in range(3000):
        bm25, cos = _random_rankings(rnd)
        want = rnd.randint(1, 25)
        order = _FakeOrder(cos, rnd.choice((0.0, 1e-3, 0.05)), rnd)
        stats = FusionStats()
        got = sorted(fuse_top(list(bm25), order, want, stats), key=lambda h: (-h[2], h[0], h[1]))[:want]
        full = sorted(fuse_all(list(bm25), list(cos)), key=lambda h: (-h[2], h[0], h[1]))[:want]
        assert got == full, (bm25, cos, want)
        stopped_early += not stats.whole
        asked += stats.asked
    assert stopped_early > 500 and asked > 100  # both ways of knowing a vector rank were exercised


def test_hybrid_pages_match_the_file_store_bit_for_bit(vec_url: str, tmp_path: Path) -> None:
    """Random stores (8-dim vectors: many equal cosines), prefixes, filters, offsets: the same page, scores ==."""
    with Store(str(tmp_path / "f"), embed=toy_embed) as fs, Store(vec_url, embed=toy_embed) as ps:
        for s in (fs, ps):
            _fill(s, 23, 300)
        for text in QUERIES:
            for vtext in (text, "sky blue", "retry"):
                for prefix in PREFIXES:
                    for flt in FILTERS:
                        for offset, limit in ((0, 1), (0, 10), (5, 7), (0, 1000)):
                            kw = {"query": text, "vector": vtext, "filter": flt}
                            want = _page(fs, prefix, limit, offset, **kw)
                            assert _page(ps, prefix, limit, offset, **kw) == want, (text, vtext, prefix, flt)


def _words_embed(text: str) -> list[float]:
    """32 dims: the sum of one seeded Gaussian vector per word, so texts sharing words are near (as real ones)."""
    out = [0.0] * 32
    for word in text.lower().split():
        rnd = random.Random(hashlib.sha256(word.encode()).digest())
        out = [a + rnd.gauss(0.0, 1.0) for a in out]
    return out


def _holey_embed(text: str) -> list[float]:
    """``_words_embed``, but a zero vector for texts with "w7" in them: BM25 hits outside the vector ranking."""
    return [0.0] * 32 if "w7" in text.split() else _words_embed(text)


def _corpus(s: Store, n: int, seed: int = 3) -> None:
    rnd = random.Random(seed)
    with s.batch() as b:
        for i in range(n):
            words = " ".join(f"w{rnd.randrange(60)}" for _ in range(rnd.randint(1, 12)))
            value: Any = {"text": words, "n": i % 7}
            if i % 11 == 0:
                value = i  # no text: no vector, no postings
            b.put(("c", str(i % 4)), f"k{i}", value)


@pytest.mark.parametrize("embed", [_words_embed, _holey_embed])
def test_hybrid_reads_few_vectors_when_the_page_allows_it(vec_url: str, tmp_path: Path, embed: Any) -> None:
    with Store(str(tmp_path / "f"), embed=embed) as fs, Store(vec_url, embed=embed) as ps:
        for s in (fs, ps):
            _corpus(s, 1200)
        ps.search(None, vector="warm")  # every vector stored
        pgvector = ps.stats()["vectors"].startswith("pgvector")
        # Query words near the vector's, and far from them (the BM25 hits' vector ranks are asked for).
        cases = [("w1 w2", "w1 w2 w3", None, None), ("w5 w7", "w40 w41", None, None)]
        cases += [("w7 w9", "w9", ("c", "1"), None), ("w1 w30", "w30 w31", None, {"n": {"$gt": 2}})]
        for query, vtext, prefix, flt in cases:
            for offset, limit in ((0, 1), (0, 10), (6, 4)):
                kw = {"query": query, "vector": vtext, "filter": flt}
                before = ps.stats()
                got = _page(ps, prefix, limit, offset, **kw)
                after = ps.stats()
                assert got == _page(fs, prefix, limit, offset, **kw), (query, vtext, prefix, flt, offset)
                read = after["vector_rows_read"] - before["vector_rows_read"]
                in_scope = sum(1 for i in range(1200) if i % 11 and (prefix is None or i % 4 == 1))
                if pgvector:
                    assert read < in_scope // 3, (query, vtext, read)
                    assert after["hybrid_whole_reads"] == before["hybrid_whole_reads"]
                else:
                    assert read >= in_scope // 2, read  # real[]: every vector (zero ones too) is read
        if pgvector:
            assert ps.stats()["vector_ranks_asked"] > 0  # the far query asked for some BM25 hits' vector ranks


def test_a_page_past_the_early_stop_reads_everything_and_still_matches(vec_url: str, tmp_path: Path) -> None:
    """A page of 1,000 hits needs the vector ranking to the end: the whole read, as before; the same page."""
    with Store(str(tmp_path / "f"), embed=_words_embed) as fs, Store(vec_url, embed=_words_embed) as ps:
        for s in (fs, ps):
            _corpus(s, 600)
        kw = {"query": "w1 w2", "vector": "w40"}
        assert _page(ps, None, 10, **kw) == _page(fs, None, 10, **kw)
        before = ps.stats()
        assert _page(ps, None, 1000, **kw) == _page(fs, None, 1000, **kw)
        after = ps.stats()
        assert after["vector_rows_read"] - before["vector_rows_read"] >= sum(1 for i in range(600) if i % 11)
        if ps.stats()["vectors"].startswith("pgvector"):
            assert after["hybrid_whole_reads"] == before["hybrid_whole_reads"] + 1


def test_near_tie_hybrid_pages_match(vec_url: str, tmp_path: Path) -> None:
    """Cosines 1e-7 apart (pgvector's order differs from the exact one) and BM25 scores all tied."""
    with Store(str(tmp_path / "f"), embed=_near_embed) as fs, Store(vec_url, embed=_near_embed) as ps:
        for s in (fs, ps):
            with s.batch() as b:
                for i in range(400):
                    b.put(("docs", str(i % 3)), f"k{i}", {"text": f"doc {i % 40}", "n": i % 5})
        for q in ("doc 7", "doc", "7 12 31"):
            for offset, limit in ((0, 1), (0, 5), (2, 8), (0, 40)):
                for flt in (None, {"n": {"$gt": 2}}):
                    kw = {"query": q, "vector": q, "filter": flt}
                    assert _page(ps, None, limit, offset, **kw) == _page(fs, None, limit, offset, **kw)
