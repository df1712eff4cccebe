"""Filter-only search, the same on every backend (issue 16): numbers compare as numbers, whole-segment prefixes."""

from __future__ import annotations

import pytest

import filemem
from filemem import Store

RECORDS = {
    (("s", "a"), "n8"): {"n": 8, "lang": "en", "meta": {"score": 0.5}, "tags": ["x"]},
    (("s", "a"), "n10"): {"n": 10, "lang": "fr", "meta": {"score": 0.75}},
    (("s", "a"), "n9.5"): {"n": 9.5, "lang": "en", "ok": True},
    (("s", "a"), "s"): {"n": "9", "lang": "en", "ok": 1},
    (("s", "a"), "big"): {"n": 2**60 + 1, "lang": "de"},
    (("s", "a"), "scalar"): 42,
    (("s", "a", "deep"), "d"): {"n": 100, "lang": "en"},
    (("s", "a-corp"), "leak"): {"n": 1000, "lang": "en"},
    (("s", "b"), "b"): {"n": 11, "lang": "en", "meta": {"score": 0.25}},
}


@pytest.fixture
def filled(any_store: Store) -> Store:
    with any_store.batch() as b:
        for (ns, key), value in RECORDS.items():
            b.put(ns, key, value)
    return any_store


def _keys(hits: list[filemem.SearchHit]) -> list[str]:
    return [h.item.key for h in hits]


@pytest.mark.parametrize(
    ("prefix", "flt", "expected"),
    [
        (("s", "a"), {"n": {"$gt": 8}}, ["n10", "n9.5", "big", "d"]),
        (("s", "a"), {"n": {"$gte": 8, "$lt": 10}}, ["n8", "n9.5"]),
        (("s", "a"), {"n": {"$gt": 2**60}}, ["big"]),
        (("s", "a"), {"n": {"$lte": 9.5}}, ["n8", "n9.5"]),
        (("s", "a"), {"n": {"$gt": "8"}}, ["s"]),  # strings with strings only
        (("s", "a"), {"lang": "en"}, ["n8", "n9.5", "s", "d"]),
        (("s", "a"), {"ok": True}, ["n9.5"]),  # True is not 1
        (("s", "a"), {"meta.score": {"$gte": 0.5}}, ["n10", "n8"]),
        (("s", "a"), {"lang": {"$ne": "en"}}, ["big", "n10", "scalar"]),
        (("s", "a"), {"lang": {"$in": ["de", "fr"]}}, ["big", "n10"]),
        (("s", "a"), {"tags": ["x"]}, ["n8"]),
        (None, {"n": {"$gt": 10}}, ["big", "d", "leak", "b"]),
        (("s",), {"meta.score": {"$lt": 0.5}}, ["b"]),
    ],
)
def test_filters_match_the_same_records(
    filled: Store, prefix: tuple[str, ...] | None, flt: dict[str, object], expected: list[str]
) -> None:
    hits = filled.search(prefix, filter=flt, limit=100)
    got = {(h.item.namespace, h.item.key) for h in hits}
    assert sorted(k for _, k in got) == sorted(expected)
    assert all(h.score == 1.0 for h in hits)
    assert [(h.item.namespace, h.item.key) for h in hits] == sorted(got)  # (namespace, key) order
    for h in hits:
        assert h.item.value == RECORDS[(h.item.namespace, h.item.key)]


def test_paging_and_prefix(filled: Store) -> None:
    every = filled.search(("s", "a"), limit=100)
    assert len(every) == 7 and "leak" not in _keys(every)
    assert _keys(filled.search(("s", "a"), limit=3, offset=2)) == _keys(every)[2:5]
    assert filled.search(("s", "a"), limit=0) == []


def test_bad_filters_are_refused_before_reading(filled: Store) -> None:
    with pytest.raises(filemem.InvalidQueryError):
        filled.search(None, filter={"n": {"$regex": "x"}})
    with pytest.raises(filemem.InvalidQueryError):
        filled.search(None, filter={"n": {"$in": 3}})
    with pytest.raises(filemem.InvalidQueryError):
        filled.search(None, limit=-1)
